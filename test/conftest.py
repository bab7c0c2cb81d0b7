import os

# Never wait on the Hugging Face hub in tests: an offline miss then fails in milliseconds.
os.environ["HF_HUB_OFFLINE"] = "1"
