"""The `orbridge` command and every command-line client and simulator."""
