"""Reports the maintainer scripts write: README tables, the paper comparison."""
