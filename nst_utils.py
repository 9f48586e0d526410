"""Configuration, VGG-19 weights (download, verify, read), image I/O and the VGG graph.

A modern port of the deeplearning.ai helper module of the same name. The public names and
signatures of the course (CONFIG, load_vgg_model, generate_noise_image,
reshape_and_normalize_image, save_image) are kept so the notebook's code runs unchanged.

Importing this module is cheap: TensorFlow, SciPy and Pillow are imported inside the functions
that need them.
"""

import hashlib
import os
import sys
import tempfile
import time

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))


def _project_path(relative):
    """Paths in CONFIG resolve against the project folder, not the current directory."""
    return os.path.join(PROJECT_DIR, relative)


class CONFIG:
    IMAGE_WIDTH = 400
    IMAGE_HEIGHT = 300
    COLOR_CHANNELS = 3
    NOISE_RATIO = 0.6
    # The ImageNet mean pixel (RGB) that VGG-19 was trained with; shaped to broadcast over
    # a (1, height, width, 3) batch.
    MEANS = np.array([123.68, 116.779, 103.939]).reshape((1, 1, 1, 3))
    VGG_MODEL = _project_path('pretrained-model/imagenet-vgg-verydeep-19.mat')
    STYLE_IMAGE = _project_path('images/style.jpg')
    CONTENT_IMAGE = _project_path('images/content.jpg')
    OUTPUT_DIR = _project_path('output/')


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


class NSTError(Exception):
    """A problem the user can fix; the message is one line naming the file or option."""


class WeightsError(NSTError):
    """The weights file is missing, damaged or not the MatConvNet VGG-19 file."""


class ImageError(NSTError):
    """An image cannot be read or written."""


class DownloadError(NSTError):
    """The weights could not be downloaded or did not verify."""


def import_tf():
    """Import tensorflow.compat.v1 in TF1 graph mode, with TensorFlow's start-up log silenced.

    Set TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's own log again.
    """
    if 'tensorflow' not in sys.modules:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
        quiet = os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'
        # Some C++ start-up lines are printed before TensorFlow reads TF_CPP_MIN_LOG_LEVEL,
        # so stderr itself is muted for the import (Python exceptions still propagate).
        with _muted_stderr(quiet):
            import tensorflow
        tensorflow.get_logger().setLevel('ERROR')  # deprecation notices of compat.v1
    import tensorflow.compat.v1 as tf
    if tf.executing_eagerly():
        tf.disable_v2_behavior()
    return tf


class _muted_stderr:
    """Point file descriptor 2 at /dev/null for the duration of a with block."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)

    def __exit__(self, *exc):
        if self.enabled:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


# ----------------------------------------------------------------------------------------------
# Atomic file writing
# ----------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call write(temp_path), then rename the temp file to path.

    The temp file sits in the same folder (a rename is atomic only within one file system), so
    a process killed at any moment leaves either the old file or the new one, never half of one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # keeps the format recognisable to writers that need it
    fd, temp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=suffix,
                                     dir=folder)
    os.close(fd)
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


# ----------------------------------------------------------------------------------------------
# Weights: download and verify
# ----------------------------------------------------------------------------------------------

def sha256_of_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_into(url, part_path, timeout, progress):
    """Append the bytes of url to part_path, resuming after what part_path already holds.

    Returns normally once the server has sent the whole file; raises OSError (URLError,
    HTTPError, a timeout or a short read) otherwise.
    """
    import urllib.error
    import urllib.request

    have = os.path.getsize(part_path) if os.path.exists(part_path) else 0
    request = urllib.request.Request(url, headers={'User-Agent': 'nst-port/1.0'})
    if have:
        request.add_header('Range', 'bytes=%d-' % have)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the range starts at the end: the file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get('Content-Length')
        total = have + int(length) if length is not None else None
        with open(part_path, 'ab' if have else 'wb') as out:
            bar = _progress_bar(total, have, os.path.basename(url), progress)
            try:
                received = have
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
    if total is not None and received < total:
        raise OSError('connection closed after %d of %d bytes' % (received, total))


def _progress_bar(total, initial, name, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit='B', unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, file=sys.stderr)


def download_vgg_model(dest=None, url=VGG_URL, sha256=VGG_SHA256, retries=3, timeout=60,
                       progress=True, fallback_url=None):
    """Download the VGG-19 weights to dest, verified by SHA-256.

    The bytes go to dest + '.part' first; only a file whose checksum matches is renamed to dest,
    so dest never holds a partial or wrong file. A dropped transfer is retried up to `retries`
    times and resumes where the server supports HTTP ranges. When url is the official https
    address and its certificate fails, the plain-http address is tried (the checksum guarantees
    the bytes either way). Raises DownloadError with a one-line message on failure.
    """
    import http.client
    import ssl
    import urllib.error

    dest = dest or CONFIG.VGG_MODEL
    if fallback_url is None and url == VGG_URL:
        fallback_url = VGG_FALLBACK_URL
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part_path = dest + '.part'
    last_error = None
    for attempt in range(1 + retries):
        try:
            _fetch_into(url, part_path, timeout, progress)
            last_error = None
            break
        except urllib.error.HTTPError as error:
            # 4xx will not change by retrying; say so at once.
            if 400 <= error.code < 500:
                _remove(part_path)
                raise DownloadError('download of %s failed: HTTP %d %s'
                                    % (url, error.code, error.reason)) from None
            last_error = 'HTTP %d %s' % (error.code, error.reason)
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLError) and fallback_url:
                url, fallback_url = fallback_url, None
                last_error = 'TLS error: %s' % error.reason
                continue
            last_error = str(error.reason)
        except (OSError, ValueError, http.client.HTTPException) as error:
            # timeouts, resets, short reads, a chunked transfer cut off (IncompleteRead)
            last_error = str(error) or type(error).__name__
        if attempt < retries:
            time.sleep(min(2 ** attempt, 10))
    if last_error is not None:
        raise DownloadError('download of %s failed after %d attempts: %s (partial data kept in %s;'
                            ' run again to resume)' % (url, 1 + retries, last_error, part_path))
    actual = sha256_of_file(part_path)
    if sha256 and actual != sha256:
        _remove(part_path)
        raise DownloadError('download of %s has SHA-256 %s, expected %s; nothing was saved'
                            % (url, actual, sha256))
    os.replace(part_path, dest)
    return dest


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------------------------
# Weights: read the MatConvNet file
# ----------------------------------------------------------------------------------------------

def read_vgg_weights(path, layers=VGG19_CONV_LAYERS):
    """Read the conv kernels and biases of MatConvNet's imagenet-vgg-verydeep-19.mat.

    Returns {name: (W, b)} with W float32 (3, 3, in, out) as stored (no transpose, as in the
    course) and b float32 (out,). Fields are read by name, so their order in the struct does not
    matter. Raises WeightsError with a one-line message when the file is not that file.
    """
    import scipy.io

    if not os.path.exists(path):
        raise WeightsError('%s: weights file not found' % path)
    if os.path.isdir(path):
        raise WeightsError('%s: is a directory, not a weights file' % path)
    with open(path, 'rb') as f:
        head = f.read(128)
    if not head.startswith(b'MATLAB 5.0 MAT-file'):
        what = 'an HTML page' if head.lstrip()[:1] == b'<' else (
            'empty' if not head else 'not a MATLAB v5 .mat file')
        raise WeightsError('%s: %s; expected MatConvNet imagenet-vgg-verydeep-19.mat '
                           '(delete it and download %s)' % (path, what, VGG_URL))
    try:
        contents = scipy.io.loadmat(path, variable_names=['layers', 'normalization'])
    except MemoryError:
        raise
    except Exception as error:  # scipy raises many kinds on damaged files
        raise WeightsError('%s: cannot be read (%s: %s); the file may be truncated or damaged, '
                           'delete it and download %s again'
                           % (path, type(error).__name__, _one_line(error), VGG_URL)) from None
    if 'normalization' in contents:
        raise WeightsError('%s: is the old MatConvNet release of VGG-19 (top-level '
                           '"normalization"), whose layout differs; download the current file '
                           'from %s' % (path, VGG_URL))
    if 'layers' not in contents:
        raise WeightsError('%s: has no "layers" variable; not a MatConvNet model file' % path)
    cells = contents['layers']
    if cells.dtype != object or cells.ndim != 2 or cells.shape[0] != 1:
        raise WeightsError('%s: "layers" is not a 1xN cell array of layer structs' % path)

    records = {}
    for index in range(cells.shape[1]):
        record = _layer_record(cells[0, index])
        if record is not None:
            records[index] = record
    names_in_file = [_field_text(records.get(i), 'name') for i in range(cells.shape[1])]

    weights = {}
    for name in layers:
        index = VGG19_LAYERS.index(name)
        record = records.get(index)
        found = _field_text(record, 'name') if record is not None else None
        if found != name:
            where = ('it holds %r' % found) if found else 'there is no layer struct there'
            hint = (' (%r is at index %d)' % (name, names_in_file.index(name))
                    if name in names_in_file else '')
            raise WeightsError('%s: layer %d should be %r but %s%s; not the MatConvNet VGG-19 file'
                               % (path, index, name, where, hint))
        weights[name] = _conv_weights(path, name, record)
    if set(layers) >= set(VGG19_CONV_LAYERS):
        try:
            check_vgg_weights(weights)
        except WeightsError as error:
            raise WeightsError('%s: %s' % (path, error)) from None
    return weights


def _one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def _layer_record(cell):
    """A cell holds a (1, 1) struct array; return its record (a numpy.void) or None."""
    if isinstance(cell, np.ndarray) and cell.dtype.names and cell.size == 1:
        return cell.reshape(-1)[0]
    return None


def _field_text(record, field):
    if record is None or field not in record.dtype.names:
        return None
    value = record[field]
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind == 'U':
        return str(value.reshape(-1)[0])
    return None


def _conv_weights(path, name, record):
    fields = record.dtype.names
    if 'weights' not in fields:
        if 'filters' in fields:
            raise WeightsError('%s: layer %s has "filters" instead of "weights": the old '
                               'MatConvNet release of VGG-19; download the current file from %s'
                               % (path, name, VGG_URL))
        raise WeightsError('%s: layer %s has no "weights" field' % (path, name))
    pair = record['weights']
    if not (isinstance(pair, np.ndarray) and pair.dtype == object and pair.size == 2):
        raise WeightsError('%s: layer %s: "weights" is not a {W, b} cell' % (path, name))
    kernel, bias = pair.reshape(-1)
    kernel = np.asarray(kernel)
    bias = np.asarray(bias)
    if kernel.dtype.kind != 'f' or bias.dtype.kind != 'f':
        raise WeightsError('%s: layer %s: weights are %s and %s, expected float32'
                           % (path, name, kernel.dtype, bias.dtype))
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise WeightsError('%s: layer %s: kernel has shape %s, expected (3, 3, in, out)'
                           % (path, name, kernel.shape))
    if bias.size != kernel.shape[3]:
        raise WeightsError('%s: layer %s: %d biases for %d output channels'
                           % (path, name, bias.size, kernel.shape[3]))
    return kernel.astype(np.float32, copy=False), bias.reshape(-1).astype(np.float32, copy=False)


def check_vgg_weights(weights):
    """Check that consecutive conv layers fit together (input channels = previous outputs)."""
    channels = 3
    for name in VGG19_CONV_LAYERS:
        kernel = weights[name][0]
        if kernel.shape[2] != channels:
            raise WeightsError('layer %s: kernel has shape %s, expected %d input channels'
                               % (name, kernel.shape, channels))
        channels = kernel.shape[3]


# ----------------------------------------------------------------------------------------------
# The VGG graph
# ----------------------------------------------------------------------------------------------

def bfloat16_supported():
    """Whether this CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX-BF16)."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


VGG_WEIGHTS_COLLECTION = 'vgg_weights'


def build_vgg_graph(weights, image_height=None, image_width=None, pooling='avg',
                    precision='float32', sess=None):
    """Build the course's VGG-19 graph in the default tf.compat.v1 graph.

    weights: {name: (W, b)} from read_vgg_weights.
    Returns a dict: 'input' a tf.Variable (1, image_height, image_width, 3) float32; conv1_1 ...
    conv5_4 = relu(conv2d(x, W, SAME) + b); avgpool1 ... avgpool5 = 2x2 stride-2 SAME pooling
    (average, as the course; 'max' gives the file's own pooling under the same keys).
    precision='bfloat16' runs the convolutions and pools in bfloat16; the dict's tensors are
    still float32, so the costs built on them stay in float32.

    With a session (sess, or the default session of this graph, as in the notebook) the weights
    are variables loaded into it once, kept out of GLOBAL_VARIABLES so that
    global_variables_initializer() leaves them alone. Constants, as the course uses without a
    session, would be copied into every executor the session builds: a style-transfer run
    builds three (content, style, training), which costs about 80 MB each at full width.
    """
    tf = import_tf()

    if pooling not in ('avg', 'max'):
        raise ValueError("pooling must be 'avg' or 'max', not %r" % (pooling,))
    if precision not in ('float32', 'bfloat16'):
        raise ValueError("precision must be 'float32' or 'bfloat16', not %r" % (precision,))
    check_vgg_weights(weights)
    image_height = image_height or CONFIG.IMAGE_HEIGHT
    image_width = image_width or CONFIG.IMAGE_WIDTH
    pool = tf.nn.avg_pool if pooling == 'avg' else tf.nn.max_pool
    compute_dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32

    def exposed(tensor):
        # The costs read float32; the cast runs only for the layers a cost uses.
        return tensor if tensor.dtype == tf.float32 else tf.cast(tensor, tf.float32)

    if sess is None:
        sess = tf.get_default_session()
    if sess is not None and sess.graph is not tf.get_default_graph():
        sess = None
    to_load = {}  # initial-value tensor -> array, fed in one session run
    created = []

    def weight(value, name):
        value = value.astype(compute_dtype.as_numpy_dtype)
        if sess is None:
            return tf.constant(value, name=name)
        variable = tf.Variable(tf.zeros(value.shape, compute_dtype), trainable=False,
                               collections=[VGG_WEIGHTS_COLLECTION], name=name)
        to_load[variable.initial_value] = value
        created.append(variable)
        return variable

    graph = {}
    graph['input'] = tf.Variable(np.zeros((1, image_height, image_width, CONFIG.COLOR_CHANNELS)),
                                 dtype='float32', name='input')
    current = tf.cast(graph['input'], compute_dtype)
    for name in VGG19_LAYERS[:37]:
        if name.startswith('conv'):
            kernel, bias = weights[name]
            with tf.variable_scope(name):
                kernel, bias = weight(kernel, 'W'), weight(bias, 'b')
                current = tf.nn.relu(
                    tf.nn.conv2d(current, kernel, strides=[1, 1, 1, 1], padding='SAME') + bias)
            graph[name] = exposed(current)
        elif name.startswith('pool'):
            key = 'avg' + name
            current = pool(current, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='SAME',
                           name=key)
            graph[key] = exposed(current)
    if to_load:
        sess.run([v.initializer for v in created], feed_dict=to_load)
    return graph


def load_vgg_model(path=None, image_height=None, image_width=None, pooling='avg',
                   precision='float32'):
    """The course's loader: read the MatConvNet file at path and build the VGG graph.

    At the default 300x400: conv4_2 is (1, 38, 50, 512), avgpool4 (1, 19, 25, 512),
    avgpool5 (1, 10, 13, 512).
    """
    weights = read_vgg_weights(path or CONFIG.VGG_MODEL)
    return build_vgg_graph(weights, image_height, image_width, pooling, precision)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

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


def read_image(path):
    """Read an image file as a (height, width, 3) uint8 RGB array, upright.

    Honours the EXIF orientation; grayscale, palette, CMYK and 16-bit images become RGB, and
    transparency is composited on white. Raises ImageError with a one-line message.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageError('%s: image file not found' % path)
    if os.path.isdir(path):
        raise ImageError('%s: is a directory, not an image file' % path)
    if os.path.getsize(path) == 0:
        raise ImageError('%s: image file is empty' % path)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError('%s: not an image Pillow can read' % path) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError('%s: cannot be decoded (%s); the file may be truncated or damaged'
                         % (path, _one_line(error))) from None


def _to_rgb(image):
    from PIL import Image

    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        # 16/32-bit grayscale: scale to 0-255 rather than letting convert() clip at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 or image.mode.startswith('I;16') else 255.0
        image = Image.fromarray(np.clip(values * 255.0 / top, 0, 255).astype(np.uint8), 'L')
    if image.mode == 'P':
        image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
    if image.mode in ('LA', 'La', 'RGBA', 'RGBa', 'PA'):
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert('RGB')


def resize_image(image, width, height):
    """Resize (h, w, 3) uint8 to exactly (height, width, 3) with Lanczos filtering."""
    from PIL import Image
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def fit_image(image, width, height):
    """Scale (h, w, 3) uint8 to cover width x height, keeping its aspect, and centre-crop."""
    from PIL import Image, ImageOps
    if image.shape[:2] == (height, width):
        return image
    fitted = ImageOps.fit(Image.fromarray(image), (width, height), Image.Resampling.LANCZOS)
    return np.asarray(fitted)


def to_pixels(image):
    """(1, height, width, 3) mean-subtracted float -> (height, width, 3) uint8, clipped."""
    image = image + CONFIG.MEANS
    return np.clip(image[0], 0, 255).astype('uint8')  # (1, H, W, 3) -> (H, W, 3)


def save_pixels(path, pixels):
    """Save (height, width, 3) uint8 RGB atomically; the format follows the extension."""
    from PIL import Image

    format_name = _image_format(path)

    def write(temp_path):
        Image.fromarray(pixels).save(temp_path, format=format_name)

    try:
        atomic_write(path, write)
    except OSError as error:
        raise ImageError('%s: cannot be written (%s)' % (path, _one_line(error))) from None


def save_image(path, image):
    """The course's save_image: a (1, height, width, 3) mean-subtracted image to 8-bit RGB."""
    save_pixels(path, to_pixels(image))


def transfer_luminance(generated, content):
    """Keep the luminance (Y) of generated and the colours (Cb, Cr) of content.

    Both (height, width, 3) uint8 RGB of the same size; returns the same. This is the
    "luminance-only transfer" of Gatys et al. (2016), done as a post-process in YCbCr.
    """
    from PIL import Image

    luma = np.asarray(Image.fromarray(generated).convert('YCbCr'))[..., :1]
    chroma = np.asarray(Image.fromarray(content).convert('YCbCr'))[..., 1:]
    ycbcr = np.concatenate([luma, chroma], axis=2)  # (H, W, 1) + (H, W, 2) -> (H, W, 3)
    return np.asarray(Image.fromarray(ycbcr, 'YCbCr').convert('RGB'))


def _image_format(path):
    from PIL import Image
    Image.init()
    extension = os.path.splitext(path)[1].lower()
    if extension not in Image.EXTENSION:
        raise ImageError('%s: unknown image extension %r' % (path, extension))
    return Image.EXTENSION[extension]
