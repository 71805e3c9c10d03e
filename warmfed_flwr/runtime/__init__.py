"""Where runs execute: their own local SuperLink (local_superlink.py, processes.py), an existing Ray cluster
(ray_cluster.py), Ray workers (ray_workers.py), Flower's in-memory message store (link_state.py), where each reply
was made (placement.py), what a run ran with (environment.py), GPU shares (gpus.py) and returning freed memory to
the system (heap.py)."""
