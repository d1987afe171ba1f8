"""One module per chapter (`ch02.py` …), each registering its exercises with `llmlab.exercises.register`."""
