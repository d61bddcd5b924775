"""Report writers: one per output format, all fed by one streaming pass over the store."""
