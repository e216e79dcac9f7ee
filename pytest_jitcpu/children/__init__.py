"""Everything that runs in another process, one real module each (none held in a string):

* :mod:`.torchscript`: the TorchScript loader of the serialization round trip, a fresh Python that
  cannot import transformers (one per session, it serves batches of saved programs);
* :mod:`.portable`: the ONNX / OpenVINO round trip, a fresh Python that cannot import torch either;
* :mod:`.aoti`: the ``aoti`` round trip, a fresh Python with torch that cannot import transformers or the
  model's own module;
* the crash-isolation child is a fork of the test process, not a program: it stays in
  :mod:`pytest_jitcpu.isolation`.

A program child is started by :mod:`.launch` as ``python -m pytest_jitcpu.children.NAME``, installs the
one import blocker (:mod:`.blocker`) first, and speaks the one message protocol (:mod:`.protocol`).

This package and those three modules import only the standard library: a child imports them before its
blocker is in place, and ``pytest_jitcpu/__init__.py`` imports nothing heavy either.
"""
