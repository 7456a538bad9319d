"""What a person touches: the command line, the Streamlit pages, cluster backends,
the emulator server and the exercise checks. Everything here calls into ``sim``."""
