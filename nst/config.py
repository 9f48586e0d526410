"""Paths, sizes and tables that every other module reads: the course's constants live here once."""

import os

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_path(relative):
    """Default paths resolve against the project folder, not the current directory."""
    return os.path.join(PROJECT_DIR, relative)


IMAGE_WIDTH = 400
IMAGE_HEIGHT = 300
COLOR_CHANNELS = 3
NOISE_RATIO = 0.6
# The ImageNet mean pixel (RGB) that VGG-19 was trained with; shaped to broadcast over a
# (1, height, width, 3) batch.
MEANS = np.array([123.68, 116.779, 103.939]).reshape((1, 1, 1, 3))
VGG_MODEL = project_path('pretrained-model/imagenet-vgg-verydeep-19.mat')
STYLE_IMAGE = project_path('images/style.jpg')
CONTENT_IMAGE = project_path('images/content.jpg')
OUTPUT_DIR = project_path('output/')

VGG_URL = 'https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
# The site's TLS certificate has lapsed before; the SHA-256 check is what guarantees the file,
# so plain HTTP is an acceptable fallback.
VGG_FALLBACK_URL = 'http://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
VGG_SHA256 = 'abdb57167f82a2a1fbab1e1c16ad9373411883f262a1a37ee5db2e6fb0044695'

# The 43 layers of MatConvNet's imagenet-vgg-verydeep-19.mat, in file order.
VGG19_LAYERS = (
    'conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1',
    'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2',
    'conv3_1', 'relu3_1', 'conv3_2', 'relu3_2', 'conv3_3', 'relu3_3', 'conv3_4', 'relu3_4', 'pool3',
    'conv4_1', 'relu4_1', 'conv4_2', 'relu4_2', 'conv4_3', 'relu4_3', 'conv4_4', 'relu4_4', 'pool4',
    'conv5_1', 'relu5_1', 'conv5_2', 'relu5_2', 'conv5_3', 'relu5_3', 'conv5_4', 'relu5_4', 'pool5',
    'fc6', 'relu6', 'fc7', 'relu7', 'fc8', 'prob',
)
# The convolutional part the course uses: conv layers (file index 0, 2, 5, ..., 34) and the
# five pools (index 4, 9, 18, 27, 36), which the course replaces by average pooling.
VGG19_CONV_LAYERS = tuple(name for name in VGG19_LAYERS[:37] if name.startswith('conv'))
VGG19_POOL_LAYERS = tuple(name for name in VGG19_LAYERS[:37] if name.startswith('pool'))
# The keys of the course's model dict that a cost can use.
VGG19_KEYS = VGG19_CONV_LAYERS + tuple('avg' + name for name in VGG19_POOL_LAYERS)
# Conv layers per block of VGG-19 (conv1_1..conv1_2, ..., conv5_1..conv5_4): 2, 2, 4, 4, 4.
VGG19_BLOCK_DEPTHS = tuple(sum(name.startswith('conv%d_' % block) for name in VGG19_CONV_LAYERS)
                           for block in range(1, 6))
VGG19_WIDTHS = (64, 128, 256, 512, 512)  # output channels of each block in the real file
