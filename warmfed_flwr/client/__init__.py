"""The ClientApp as the clients run it: one handler per message type (app.py), for discovery (discovery.py), the
LoRA fit (lora.py) and the classifier's rounds, baselines, personalization and evaluation (classifier.py), each
starting from the run's settings and this client's data (context.py)."""
