"""A run's plumbing: what a phase works with (context.py), talking to the clients (grid.py, federation.py), what
it records (results.py, snapshots.py, tracking.py, plots.py), what it keeps (store.py, checkpoint.py,
artifacts.py) and how models travel in messages (transport.py)."""
