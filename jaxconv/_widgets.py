"""The tutorial notebook's Jupyter controls: a 3x3 kernel whose nine values a reader edits,
with the image's feature map and its ReLU redrawn, and a slider over a learned kernel's steps.

For experiments/convolution_tutorial.py only (the library never imports it). ipywidgets and
matplotlib are imported when a control is built; a control's callback redraws without a front
end, so it runs (and is tested) headless.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import jaxconv
from jaxconv import viz


@dataclass(frozen=True)
class Control:
    """A live figure: ipywidgets inputs, the figure they redraw and the picture showing it.

    Displayed in Jupyter it is the widget (``widget``); a page without a kernel (nbconvert,
    the docs site) shows the PNG of its last drawing instead.

    Attributes:
      widget: the ipywidgets box to display.
      inputs: the widgets a reader changes; each change calls ``update``.
      figure: the matplotlib figure ``update`` redraws.
      picture: the ``ipywidgets.Image`` holding ``figure`` as a PNG.
      update: redraws ``figure`` and ``picture`` from the inputs' current values.
    """

    widget: Any
    inputs: tuple[Any, ...]
    figure: Any
    picture: Any
    update: Callable[..., None]

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs))
        bundle["image/png"] = base64.b64encode(self.picture.value).decode("ascii")
        bundle["text/plain"] = "a live control: run this notebook in Jupyter to use it"
        return bundle


def feature_maps(image: Any, kernel: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cross-correlation of ``image`` with ``kernel`` (SAME padding) and its ReLU.

    Args:
      image: [H, W].
      kernel: [3, 3].

    Returns:
      (feature map, ReLU of it), each [H, W] float32.
    """
    x = np.asarray(image, np.float32)[None, :, :, None]
    w = np.asarray(kernel, np.float32)[:, :, None, None]
    fmap = jaxconv.conv(x, w, padding="SAME")[0, :, :, 0]
    return np.asarray(fmap), np.asarray(jaxconv.activation("relu")(fmap))


def _write_values(ax: Any, a: np.ndarray) -> None:
    for text in list(ax.texts):
        text.remove()
    for (r, c), v in np.ndenumerate(a):
        ax.text(c, r, viz.format_value(float(v)), ha="center", va="center", fontsize=8)


def _png(fig: Any) -> bytes:
    return fig._repr_png_()


def _ipywidgets() -> Any:
    try:
        import ipywidgets  # type: ignore[import-untyped]  # no stubs, no py.typed
    except ImportError as e:
        raise ImportError(
            "the tutorial's controls need ipywidgets: pip install ipywidgets, or from a "
            "checkout of jaxconv: pip install -e '.[notebooks]'"
        ) from e
    return ipywidgets


def kernel_editor(image: Any, kernel: Any) -> Control:
    """Nine number boxes holding a 3x3 kernel; each edit redraws the kernel, the feature map
    of ``image`` (``feature_maps``) and its ReLU, every cell annotated with its value.

    Args:
      image: [H, W] the input image.
      kernel: [3, 3] the starting values.

    Returns:
      The ``Control``; ``inputs`` are the nine ``FloatText`` boxes in row-major order.
    """
    image = np.asarray(image, np.float32)
    kernel = np.asarray(kernel, np.float32)
    if image.ndim != 2:
        raise ValueError(f"kernel_editor: `image` must be [H, W], got shape {image.shape}")
    if kernel.shape != (3, 3):
        raise ValueError(f"kernel_editor: `kernel` must be [3, 3], got shape {kernel.shape}")
    widgets = _ipywidgets()

    cells = tuple(widgets.FloatText(value=float(v), step=0.5,
                                    layout=widgets.Layout(width="5em"))
                  for v in kernel.ravel())
    fig = viz._figure((8, 2.8))
    axes = fig.subplots(1, 3)
    titles = ("kernel", "feature map", "after ReLU")
    shown = (kernel, *feature_maps(image, kernel))
    images = [ax.imshow(a, cmap="RdBu_r") for ax, a in zip(axes, shown, strict=True)]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    picture = widgets.Image(format="png")

    def update(change: Any = None) -> None:
        k = np.array([c.value for c in cells], np.float32).reshape(3, 3)
        for ax, im, a in zip(axes, images, (k, *feature_maps(image, k)), strict=True):
            lim = max(float(np.max(np.abs(a))), 1e-6)
            im.set_data(a)
            im.set_clim(-lim, lim)
            _write_values(ax, a)
        picture.value = _png(fig)

    update()
    for c in cells:
        c.observe(update, names="value")
    grid = widgets.GridBox(list(cells), layout=widgets.Layout(
        grid_template_columns="repeat(3, 5.5em)", width="18em"))
    box = widgets.HBox([widgets.VBox([widgets.Label("edit the kernel:"), grid]), picture])
    return Control(box, cells, fig, picture, update)


def learning_scrubber(kernels: Any, losses: Any) -> Control:
    """A step slider (and a play button) over a kernel's recorded learning: each position
    redraws the kernel at that step and marks its loss on the loss curve.

    Args:
      kernels: [T, 3, 3] the kernel at each recorded step.
      losses: [T] the loss at each recorded step.

    Returns:
      The ``Control``; ``inputs`` is the one ``IntSlider`` (0 to T - 1, starting at 0).
    """
    kernels = np.asarray(kernels, np.float32)
    losses = np.asarray(losses, np.float32)
    if kernels.ndim != 3 or losses.shape != kernels.shape[:1]:
        raise ValueError(
            f"learning_scrubber: `kernels` must be [T, kh, kw] and `losses` [T], got shapes "
            f"{kernels.shape} and {losses.shape}"
        )
    widgets = _ipywidgets()

    last = len(kernels) - 1
    slider = widgets.IntSlider(value=0, min=0, max=last, description="step")
    play = widgets.Play(value=0, min=0, max=last, interval=150)
    widgets.jslink((play, "value"), (slider, "value"))
    fig = viz._figure((7, 3))
    ax_k, ax_l = fig.subplots(1, 2)
    lim = max(float(np.max(np.abs(kernels))), 1e-6)
    kernel_image = ax_k.imshow(kernels[0], cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_k.set_xticks([])
    ax_k.set_yticks([])
    ax_l.semilogy(losses)
    (marker,) = ax_l.plot([0], [losses[0]], "ro")
    ax_l.set_xlabel("step")
    ax_l.set_title("loss")
    picture = widgets.Image(format="png")

    def update(change: Any = None) -> None:
        s = slider.value
        kernel_image.set_data(kernels[s])
        _write_values(ax_k, kernels[s])
        ax_k.set_title(f"kernel, step {s}")
        marker.set_data([s], [losses[s]])
        picture.value = _png(fig)

    update()
    slider.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([play, slider]), picture])
    return Control(box, (slider,), fig, picture, update)
