"""The layout of MatConvNet's imagenet-vgg-verydeep-19.mat as pretrained-model/README.md
documents it, written out here rather than taken from nst.config or nst.synthetic: the tests
check the code and the generated files against these."""

# The 43 layers in file order.
DOC_LAYER_NAMES = (
    ['conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1',
     'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2']
    + ['%s3_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool3']
    + ['%s4_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool4']
    + ['%s5_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool5']
    + ['fc6', 'relu6', 'fc7', 'relu7', 'fc8', 'prob'])
# Where the conv layers and the (max) pools sit, and the mean pixel (RGB) of meta.normalization.
DOC_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
DOC_POOL_INDICES = (4, 9, 18, 27, 36)
DOC_MEAN_PIXEL = (123.68, 116.779, 103.939)

CONV_NAMES = tuple(DOC_LAYER_NAMES[i] for i in DOC_CONV_INDICES)
# The keys of the course's model dict.
COURSE_KEYS = ('input',) + CONV_NAMES + tuple('avgpool%d' % k for k in range(1, 6))
