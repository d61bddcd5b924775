"""Sending: the HTTP client, pacing, senders (real time, batches) and the run loop written once against them."""
