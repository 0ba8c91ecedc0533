"""The trigger backend's guarantees beyond pynenc's suite."""
