"""Low-level helpers shared by every layer above ``models``: the process group
(`distributed`) and the device / autocast choice
(`device`). They import nothing else from gcnet."""
