"""One module per pipeline stage; each is runnable alone through `hazardctl <stage>`."""
