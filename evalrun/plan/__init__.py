"""From a spec and a dataset to a stream of cells: dataset scanning, templates, answer modes, the grid."""
