raise RuntimeError("boom at import time")
