"""A run's plumbing: talking to the clients (federation.py), what it records (results.py, snapshots.py, tracking.py,
plots.py), what it keeps (checkpoint.py, artifacts.py) and how models travel in messages (transport.py)."""
