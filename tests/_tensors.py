"""Test helper: the largest tensor an operation creates, to check that a sparse method never forms an n x n one."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor)}


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any new tensor produced inside the region (views of existing
    tensors, such as a transposed weight, are not new)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = _storages(tree_flatten((args, kwargs or {}))[0])
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.numel = max(self.numel, t.numel())
        return out
