# cython: language_level=3
# The _direct kernels built for x86-64-v4 (setup.py adds -march=x86-64-v4); convnet.fast._backend picks the variant.
include "_direct.pyx"
