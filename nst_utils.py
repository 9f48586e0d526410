"""The course's helper module: configuration, the VGG-19 model, and image helpers.

A modern port of the deeplearning.ai file of the same name: the names and signatures are the
course's, so the notebook's code runs unchanged. The machinery beneath (reading the MatConvNet
file, the fast ops, image files) lives in the package nst/. Importing this module is cheap:
TensorFlow is imported when a model is first built.
"""

import sys

import numpy as np

from nst import config, images, vgg, weights


class CONFIG:
    IMAGE_WIDTH = config.IMAGE_WIDTH        # 400
    IMAGE_HEIGHT = config.IMAGE_HEIGHT      # 300
    COLOR_CHANNELS = config.COLOR_CHANNELS  # 3
    NOISE_RATIO = config.NOISE_RATIO        # 0.6
    MEANS = config.MEANS                    # the ImageNet mean pixel, shape (1, 1, 1, 3)
    VGG_MODEL = config.VGG_MODEL            # pretrained-model/imagenet-vgg-verydeep-19.mat
    STYLE_IMAGE = config.STYLE_IMAGE        # images/style.jpg
    CONTENT_IMAGE = config.CONTENT_IMAGE    # images/content.jpg
    OUTPUT_DIR = config.OUTPUT_DIR          # output/


def load_vgg_model(path=None, image_height=None, image_width=None, pooling='avg',
                   precision='float32', layers=None, tune=False):
    """Read the MatConvNet VGG-19 file at path and build the course's model: a dict of layers.

    'input' is a tf.Variable holding the generated image; every conv layer is
    relu(conv2d(previous, W, stride 1, SAME) + b) with the file's W and b as stored, and every
    pool is a 2x2 stride-2 average pool (pooling='max': the network's own max pool). Shapes at
    the default 300x400:

        input    (1, 300, 400, 3)
        conv1_*  (1, 300, 400, 64)    avgpool1 (1, 150, 200, 64)
        conv2_*  (1, 150, 200, 128)   avgpool2 (1, 75, 100, 128)
        conv3_*  (1, 75, 100, 256)    avgpool3 (1, 38, 50, 256)
        conv4_*  (1, 38, 50, 512)     avgpool4 (1, 19, 25, 512)
        conv5_*  (1, 19, 25, 512)     avgpool5 (1, 10, 13, 512)

    precision='bfloat16' computes the network in bfloat16 (the dict's tensors stay float32).
    layers: the keys the caller will use; only the weights those need are read, and the dict
    stops there (default: all). tune: measure the fastest way to run each layer on this machine
    (a few seconds, once: the choice is cached).
    """
    path = path or CONFIG.VGG_MODEL
    needed = weights.layers_needed(layers or config.VGG19_KEYS)
    W = weights.read_vgg_weights(path, needed)
    paths = None
    if tune:  # says on stderr when it measures (first use); silent when the choice is cached
        from nst import tuning
        paths = tuning.choose_paths(W, image_height or CONFIG.IMAGE_HEIGHT,
                                    image_width or CONFIG.IMAGE_WIDTH, precision, pooling,
                                    log=_say)
    net = vgg.VGGBuilder(W, image_height, image_width, pooling, precision, paths=paths)

    graph = {}
    graph['input']    = net.input()
    graph['conv1_1']  = net.conv2d_relu(graph['input'], 'conv1_1')
    graph['conv1_2']  = net.conv2d_relu(graph['conv1_1'], 'conv1_2')
    graph['avgpool1'] = net.pool(graph['conv1_2'], 'avgpool1')
    graph['conv2_1']  = net.conv2d_relu(graph['avgpool1'], 'conv2_1')
    graph['conv2_2']  = net.conv2d_relu(graph['conv2_1'], 'conv2_2')
    graph['avgpool2'] = net.pool(graph['conv2_2'], 'avgpool2')
    graph['conv3_1']  = net.conv2d_relu(graph['avgpool2'], 'conv3_1')
    graph['conv3_2']  = net.conv2d_relu(graph['conv3_1'], 'conv3_2')
    graph['conv3_3']  = net.conv2d_relu(graph['conv3_2'], 'conv3_3')
    graph['conv3_4']  = net.conv2d_relu(graph['conv3_3'], 'conv3_4')
    graph['avgpool3'] = net.pool(graph['conv3_4'], 'avgpool3')
    graph['conv4_1']  = net.conv2d_relu(graph['avgpool3'], 'conv4_1')
    graph['conv4_2']  = net.conv2d_relu(graph['conv4_1'], 'conv4_2')
    graph['conv4_3']  = net.conv2d_relu(graph['conv4_2'], 'conv4_3')
    graph['conv4_4']  = net.conv2d_relu(graph['conv4_3'], 'conv4_4')
    graph['avgpool4'] = net.pool(graph['conv4_4'], 'avgpool4')
    graph['conv5_1']  = net.conv2d_relu(graph['avgpool4'], 'conv5_1')
    graph['conv5_2']  = net.conv2d_relu(graph['conv5_1'], 'conv5_2')
    graph['conv5_3']  = net.conv2d_relu(graph['conv5_2'], 'conv5_3')
    graph['conv5_4']  = net.conv2d_relu(graph['conv5_3'], 'conv5_4')
    graph['avgpool5'] = net.pool(graph['conv5_4'], 'avgpool5')
    return net.finish(graph)


def _say(line):
    """A line on stderr that leaves a progress bar on screen whole."""
    from tqdm.auto import tqdm
    tqdm.write(line, file=sys.stderr)


def generate_noise_image(content_image, noise_ratio=CONFIG.NOISE_RATIO):
    """The content image blended with uniform(-20, 20) noise, as the course starts from.

    content_image: (1, height, width, 3) mean-subtracted. Returns float32 of the same shape.
    """
    noise_image = np.random.uniform(-20, 20, content_image.shape).astype('float32')
    input_image = noise_image * noise_ratio + content_image * (1 - noise_ratio)
    return input_image.astype('float32')


def reshape_and_normalize_image(image):
    """(height, width, 3) pixels 0-255 -> (1, height, width, 3) with the mean pixel removed."""
    image = np.reshape(image, ((1,) + image.shape))  # (H, W, 3) -> (1, H, W, 3)
    return image - CONFIG.MEANS


def save_image(path, image):
    """Save a (1, height, width, 3) mean-subtracted image as 8-bit RGB (atomically)."""
    images.save_pixels(path, images.to_pixels(image))
