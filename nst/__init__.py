"""The machinery beneath the course's two files (nst_utils.py and art_generation.py).

One module per concern; modules import only modules listed above them, never the course files:

    config      paths, sizes, the VGG-19 layer table, the weights' URL and checksum
    errors      error types and exit codes
    runtime     importing TensorFlow (TF1 graph mode, oneDNN, threads) and the CPU's features
    files       atomic file writing
    checkpoint  saving a run's state and resuming from it (--resume)
    download    fetching the weights (resumable, SHA-256 checked)
    matfile     a streaming MATLAB v5 reader (only the layers needed)
    weights     reading and checking MatConvNet's VGG-19 conv weights
    synthetic   MatConvNet-layout weight files with random weights, for tests and benchmarks
    winograd    Winograd convolutions F(4x4, 3x3) from TensorFlow ops
    fast_ops    faster TensorFlow ops with the same results (pooling, convolutions)
    tuning      choosing the fast paths by measuring them on this machine, cached
    vgg         the VGG-19 graph
    memory      estimating a run's peak memory
    tiles       tiles under a memory budget: their layout, blending and Gram-matrix parts
    images      image files in and out
    stages      coarse-to-fine stages: the ladder, the schedule, style scale, upsampling
    optimize    the optimisation loop (Adam, L-BFGS-B), progress, Ctrl-C
    plots       costs.png and summary.png
    cli         the command line: options, checks, inputs, exit codes

Importing the package imports nothing heavy: TensorFlow, SciPy, Pillow and Matplotlib are
imported inside the functions that need them.
"""
