"""Tools beside the hazardctl core (the simulated LLM provider); not needed to run the pipeline."""
