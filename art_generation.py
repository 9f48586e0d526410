"""Art Generation with Neural Style Transfer (Gatys et al., 2015), the deeplearning.ai assignment.

A generated image G is optimised so that its VGG-19 activations keep the content of image C and
the Gram matrices (the style) of image S. Read top to bottom:

1. the graded functions, written as the course writes them: the content cost, the Gram matrix,
   the style cost of one layer and of several, the total cost;
2. the style-transfer graph built from them, and model_nn, the course's training loop;
3. main: `python art_generation.py` runs the notebook's cells, with the command line's options.

Every run executes the functions of parts 1 and 2: edit one and the next run changes (the
steps of model_nn's loop, and its Ctrl-C, checkpoints and progress bar, are nst.optimize's).
The machinery (options, files, the optimizers, speed) lives in the package nst/.
"""

import os
import sys

if __name__ == '__main__':  # a Ctrl-C while the modules below load: one line, exit 130
    from nst.errors import exit_quietly_on_ctrl_c
    exit_quietly_on_ctrl_c()

from nst import cli, optimize, stages
from nst.runtime import import_tf, session_config  # tensorflow.compat.v1, on first use
from nst_utils import (CONFIG, generate_noise_image, load_vgg_model,
                       reshape_and_normalize_image, save_image)


# ----------------------------------------------------------------------------------------------
# 1. The graded functions
# ----------------------------------------------------------------------------------------------

def compute_content_cost(a_C, a_G):
    """Content cost: how far G's activations are from C's at one layer.

    a_C: (1, n_H, n_W, n_C) activations of the content image C (tensor or array).
    a_G: (1, n_H, n_W, n_C) tensor, activations of the generated image G.
    Returns a scalar tensor: 1 / (4 n_H n_W n_C) * sum((a_C - a_G)^2).
    """
    tf = import_tf()
    m, n_H, n_W, n_C = a_G.get_shape().as_list()
    a_C = tf.cast(a_C, a_G.dtype)
    J_content = 1 / (4 * n_H * n_W * n_C) * tf.reduce_sum(tf.square(tf.subtract(a_C, a_G)))
    return J_content


def gram_matrix(A):
    """Gram matrix of A.

    A: (n_C, n_H * n_W) tensor, the unrolled activations, one row a channel.
    Returns (n_C, n_C): A A^T, the correlations between the channels.
    """
    tf = import_tf()
    GA = tf.matmul(A, tf.transpose(A))
    return GA


def compute_layer_style_cost(a_S, a_G):
    """Style cost of one layer.

    a_S: (1, n_H, n_W, n_C) activations of the style image S (tensor or array).
    a_G: (1, n_H, n_W, n_C) tensor, activations of the generated image G.
    Returns a scalar tensor: 1 / (4 n_C^2 (n_H n_W)^2) * sum((G_S - G_G)^2), with G_S and G_G
    the Gram matrices of the (n_C, n_H n_W) unrolled activations.
    """
    tf = import_tf()
    m, n_H, n_W, n_C = a_G.get_shape().as_list()
    # (1, n_H, n_W, n_C) -> (n_H * n_W, n_C) -> (n_C, n_H * n_W)
    a_S = tf.transpose(tf.reshape(tf.cast(a_S, a_G.dtype), [n_H * n_W, n_C]))
    a_G = tf.transpose(tf.reshape(a_G, [n_H * n_W, n_C]))
    GS = gram_matrix(a_S)
    GG = gram_matrix(a_G)
    # The constant in Python's numbers: in TensorFlow's int32 it would overflow on real layers
    # (conv1_1 at 300x400: 4 * 64^2 * 120000^2 ~ 2.4e14).
    J_style_layer = 1 / (4 * n_C ** 2 * (n_H * n_W) ** 2) * tf.reduce_sum(tf.square(GS - GG))
    return J_style_layer


# The style layers and their weights (they sum to 1), and the content layer.
STYLE_LAYERS = [
    ('conv1_1', 0.2),
    ('conv2_1', 0.2),
    ('conv3_1', 0.2),
    ('conv4_1', 0.2),
    ('conv5_1', 0.2)]
CONTENT_LAYER = 'conv4_2'


def compute_style_cost(model, STYLE_LAYERS, sess=None):
    """The overall style cost: the weighted sum of the layer style costs.

    The style image must be the model's current input: its activations at every style layer
    are evaluated now, in one session run (sess, or the default session), and held fixed.
    (build_style_transfer passes a session on which the style's pass has run already.)
    """
    tf = import_tf()
    sess = sess or tf.get_default_session()
    a_S = sess.run({layer_name: model[layer_name] for layer_name, _ in STYLE_LAYERS})
    J_style = 0
    for layer_name, coeff in STYLE_LAYERS:
        a_G = model[layer_name]
        J_style_layer = compute_layer_style_cost(a_S[layer_name], a_G)
        J_style += coeff * J_style_layer
    return J_style


def total_cost(J_content, J_style, alpha=10, beta=40):
    """J = alpha * J_content + beta * J_style."""
    J = alpha * J_content + beta * J_style
    return J


# ----------------------------------------------------------------------------------------------
# 2. The style-transfer graph and the training loop
# ----------------------------------------------------------------------------------------------

def build_style_transfer(sess, model, content_image, style_images, *, blend_weights=None,
                         content_layer=CONTENT_LAYER, style_layers=STYLE_LAYERS, alpha=10,
                         beta=40, tv_weight=0.0, learning_rate=2.0):
    """The notebook's cells from the model to train_step, for any images and settings.

    content_image, style_images[k]: (1, H, W, 3) mean-subtracted, of the model's size.
    blend_weights: one per style, summing to 1 (default: equal); each style's cost is weighted.
    The activations of C and S are held fixed (nst.optimize.FixedInputs): what depends on them
    alone, such as the style's Gram matrices, is computed once, not at every step.
    Returns the nst.optimize.StyleTransfer that model_nn runs.
    """
    set_input = optimize.InputSetter.of(model)
    fixed = optimize.FixedInputs()
    blend_weights = blend_weights or [1 / len(style_images)] * len(style_images)

    # The content cost, with C's activations at the content layer.
    set_input(sess, content_image)
    a_C = fixed.hold(sess.run(model[content_layer]))
    a_G = model[content_layer]
    J_content = compute_content_cost(a_C, a_G)

    # Each style image's activations at the style layers, held fixed. (Every pass runs before
    # the style costs are built: a session keeps the ops it has seen as they were, and prepare
    # rewires the Gram matrices' users to faster ones, nst.fast_ops.use_fast_grams.)
    style_passes = []
    for style_image in style_images:
        set_input(sess, style_image)
        style_passes.append(fixed.evaluated(
            sess, [model[layer_name] for layer_name, _ in style_layers]))

    # The style cost: compute_style_cost reads each style's activations from its pass; each
    # style's cost is weighted.
    J_style = 0
    for style_pass, weight in zip(style_passes, blend_weights):
        J_style += weight * compute_style_cost(model, style_layers, sess=style_pass)

    J = total_cost(J_content, J_style, alpha=alpha, beta=beta)
    if tv_weight:
        J += tv_weight * optimize.total_variation_cost(model['input'])
    return optimize.prepare(model, J, J_content, J_style, learning_rate=learning_rate,
                            fixed=fixed, sess=sess)


def model_nn(sess, input_image, num_iterations=200, nst=None, output_dir=None, print_every=20,
             save_every=20, save_image=save_image, **options):
    """The course's training loop: one training step an iteration; every 20 iterations prints
    the costs and saves the image as i.png, and at the end saves generated_image.jpg (in
    output_dir, default output/). Returns the generated image, (1, H, W, 3) mean-subtracted.

    nst: the graph from build_style_transfer or nst.optimize.prepare (default: the last one
    built in sess.graph). options: the command line's, as nst.optimize.Optimisation takes them
    (the optimizer, tiles, checkpoints, the progress bar, Ctrl-C).
    """
    nst = nst or optimize.latest_style_transfer(sess.graph)
    if nst is None:
        raise ValueError('model_nn: no style-transfer graph in this session; '
                         'call build_style_transfer first')
    output_dir = output_dir or CONFIG.OUTPUT_DIR
    os.makedirs(output_dir, exist_ok=True)

    # Initialize Adam's variables and assign the input image to the model's input, then
    # minimize J: each iteration is one training step (Adam's train_step, or an L-BFGS one).
    with optimize.Optimisation(sess, nst, input_image, num_iterations,
                               checkpoint_every=save_every, **options) as run:
        for i in run.iterations():
            # The generated image after the step (with average, the average of the iterates)
            generated_image = run.generated_image()

            # Print every print_every iterations.
            if print_every and i % print_every == 0:
                Jt, Jc, Js = run.costs()
                print("Iteration " + str(i) + " :")
                print("total cost = " + str(Jt))
                print("content cost = " + str(Jc))
                print("style cost = " + str(Js))

            # Save the current generated image in the output directory.
            if save_every and i % save_every == 0:
                save_image(os.path.join(output_dir, str(i) + ".png"), generated_image)

        # Save the last generated image (the last one whose cost was finite).
        generated_image = run.generated_image()
        save_image(os.path.join(output_dir, "generated_image.jpg"), generated_image)
    return generated_image


# ----------------------------------------------------------------------------------------------
# 3. python art_generation.py
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    """The notebook's flow on the command line's images and settings; returns the exit code.

    A --width above --start-width runs the flow in stages of growing size, each starting from
    the last one's result; a stage too large for --max-memory runs in tiles. --resume DIR goes
    on from DIR's checkpoint. Bad input: one line and exit code 2; a failure at run time: 1;
    Ctrl-C: 130 (the latest image and a checkpoint are kept).
    """
    outcome = cli.Outcome()
    with cli.exit_codes(outcome):
        options, resumed = cli.parse_options(CONTENT_LAYER, STYLE_LAYERS, argv)
        # Images, weights (downloaded on first use) and memory, checked before anything runs.
        inputs = cli.prepare_inputs(options)
        record = cli.RunRecord(inputs, options, resumed)
        stop = optimize.StopRequest()  # Ctrl-C: end the current iteration, keep its image
        with cli.progress_bar(options, inputs.stages, record) as progress:
            for stage in stop.covering(record.stages_to_run()):  # one stage: the course's run
                generated_image = run_stage(options, inputs, stage, record, progress, stop)
                if stage.count > 1 and record.stage_finished:
                    save_image(cli.stage_path(options, stage), generated_image)
                if record.stopped():
                    break
        outcome.code = cli.finish(options, record, stop)
    return outcome.code


def run_stage(options, inputs, stage, record, progress, stop):
    """The notebook's cells at one stage's size: the images, the model, the costs, the loop
    (model_nn; its nst.optimize.RunResult goes to record). Returns the generated image."""
    content, styles, initial = cli.stage_images(options, inputs, stage)
    content_image = reshape_and_normalize_image(content)
    style_images = [reshape_and_normalize_image(style) for style in styles]
    if record.resumes(stage):  # the checkpoint's image, mid-stage
        generated_image = record.resumed.image
    elif stage.index > 0:  # the last stage's result, upsampled
        generated_image = stages.upsample(record.last_image, stage.width, stage.height)
    elif initial is None:
        generated_image = generate_noise_image(content_image, options.noise_ratio)
    else:
        generated_image = reshape_and_normalize_image(initial).astype('float32')

    # A stage larger than the memory budget runs in tiles: the model is one tile's size.
    tiling = inputs.tilings[stage.index]
    crop = cli.first_tile(tiling)
    tf = import_tf()
    with tf.Graph().as_default(), tf.Session(config=session_config()) as sess:
        model = load_vgg_model(inputs.weights_path, *tiling.tile_size,
                               pooling=options.pooling, precision=inputs.precision,
                               layers=inputs.layers, tune=not options.no_tune)
        nst = build_style_transfer(
            sess, model, crop(content_image), [crop(image) for image in style_images],
            blend_weights=inputs.blend_weights, content_layer=options.content_layer,
            style_layers=options.style_layers, alpha=options.alpha, beta=options.beta,
            tv_weight=options.tv_weight / tiling.pixel_share(),
            learning_rate=options.learning_rate)
        tiled = None
        if tiling.count > 1:
            tiled = optimize.tile_targets(sess, nst, tiling, content_image, style_images,
                                          options.content_layer, options.style_layers,
                                          record.seam_generator(stage))
        cli.start_stage(progress, stage, tiling)
        return model_nn(
            sess, generated_image, record.remaining(stage), nst=nst, optimizer=options.optimizer,
            output_dir=options.output_dir, save_every=options.save_every,
            print_every=options.print_every, progress=progress,
            save_image=(cli.colour_preserving(content) if options.preserve_colors
                        else save_image),
            first_iteration=record.iterations, average=options.average, stop=stop,
            tiled=tiled, resume=record.continuation(stage),
            checkpoint=record.checkpointer(stage), finished=lambda run: record.add(stage, run))


if __name__ == '__main__':
    sys.exit(main())
