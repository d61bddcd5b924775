"""Decisions across runs: the paired change between two run folders (`diff`) and a statistical
gate for CI (`gate`); one experiment's history builds on them in `evalrun.reports.history`.
Imported only by the commands and API names that need it (numpy loads with it)."""
