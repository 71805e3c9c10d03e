"""The comparison matrix runner: methods x rounds x seeds through the real app, resumable."""
