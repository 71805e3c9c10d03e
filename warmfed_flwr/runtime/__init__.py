"""Where runs execute: their own local SuperLink (local_superlink.py, processes.py), Ray workers (ray_workers.py), GPU
shares (gpus.py) and returning freed memory to the system (heap.py)."""
