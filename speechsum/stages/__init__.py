"""One LightningModule per recipe stage, sharing optimisation, logging and checkpoint code."""
