"""The method's phases as the server runs them: LoRA collection and the warm start (warmfed.py), federated rounds
of any Flower strategy (rounds.py), personalization (personalize.py) and the baselines' phases (baselines.py)."""
