"""The retraining dashboard: a FastAPI app the plugin mounts in Airflow's API server (``/retrain``)."""
