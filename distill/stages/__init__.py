"""Config-level stages: a typed `Config` in, library calls, files on disk out (what the commands in
`distill.jobs` and the scripts run)."""
