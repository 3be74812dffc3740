"""Low-level helpers shared by every layer above ``models``: the process group
(:mod:`~gcnet.utils.distributed`) and the device / autocast choice
(:mod:`~gcnet.utils.device`). They import nothing else from gcnet."""
