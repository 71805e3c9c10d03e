"""The method's phases as the server runs them: WarmFedStrategy (warmfed.py) runs the clients' LoRA fits (lora.py),
the warm start (warmstart.py), federated rounds of any Flower strategy (rounds.py) and personalization
(personalize.py); baselines.py runs the baselines' phases."""
