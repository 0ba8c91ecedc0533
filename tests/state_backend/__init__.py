"""The state backend's rows as pynenc reads them back."""
