"""Decisions across runs: the paired change between two run folders (`diff`), a statistical gate
for CI (`gate`) and one experiment's history (`history`). Imported only by the commands and API
names that need it (numpy loads with it)."""
