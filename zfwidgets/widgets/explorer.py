"""Explorer: the product's front door, composing every view of the paper for one model.

``Explorer(model)`` shows, for the current image (picked in a strip, or uploaded): the
feature maps of a layer (:class:`LayerGrid`); for the map clicked, its deconvnet and guided
back-propagation projections for this image (docs/method.md Sec. 2) and its top-9 over the
dataset (:class:`TopNine`, Fig. 2); the occlusion maps (:class:`OcclusionMap`, Fig. 7) and
the top-5 predictions. ``Explorer()`` opens on the bundled default model and images.

Everything is computed by the engine on the model's device; the widgets only draw. Each part
computes through its own job runner (:mod:`zfwidgets.widgets._jobs`); the Explorer's own job
computes the projections of the selected unit once per click, for the unit view and the
heatmap views alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import torch
import traitlets as t
from torch import nn

from ..atlas.stored import open_atlas
from ..base.checks import check_model, model_device
from ..base.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    contrast_normalize,
    display_image,
    fit_channels,
    mean_std_of,
)
from ..base.layers import first_conv, module_tree_copy, resolve_layer
from ..base.uploads import MAX_UPLOAD_BYTES, decode_upload
from ..engine.attribution import VIEWS, AttributionMaps, attribution_maps
from ..engine.backprop import backprop
from ..engine.probe import called_convs, check_images
from ._jobs import Job, Runner
from ._snapshot import Pictured
from .gallery import Gallery
from .layer_grid import LayerGrid

__all__ = ["Explorer", "MAX_UPLOAD_BYTES"]


_UNIT_HINT = "click a feature map above to project it to pixel space"


def _default_transform(channels: int, size: int = 224):
    """Resize + centre crop + tensor + ImageNet normalisation (grey for one channel)."""
    from torchvision import transforms as T

    steps = [T.Resize(size), T.CenterCrop(size)]
    if channels == 1:
        steps += [T.Grayscale(1), T.ToTensor(), T.Normalize((0.5,), (0.5,))]
    else:
        steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def _in_channels(model: nn.Module) -> int:
    conv = first_conv(model)
    return conv[1].in_channels if conv else 3


def _to_tensor(item: Any, transform: Any, index: int) -> torch.Tensor:
    if isinstance(item, (tuple, list)) and item and not isinstance(item, torch.Tensor):
        item = item[0]
    if not isinstance(item, torch.Tensor):
        if transform is None:
            raise TypeError(f"images: item {index} is a {type(item).__name__}; pass transform=")
        item = transform(item)
    if not isinstance(item, torch.Tensor) or item.dim() != 3:
        shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
        raise ValueError(f"images: expected item {index} to be a (C, H, W) tensor, got {shape}")
    return item


def _check_attributions(attributions: Any) -> dict[str, Any]:
    if attributions is None:
        return {}
    if not isinstance(attributions, Mapping):
        raise TypeError(
            "attributions: expected a dict name -> attribution class (e.g. "
            "{'Integrated Gradients': captum.attr.IntegratedGradients}), "
            f"got {type(attributions).__name__}"
        )
    from .occlusion_map import OCCLUSION_VIEWS

    reserved = {"Grad-CAM", *VIEWS, *OCCLUSION_VIEWS}
    for name, cls in attributions.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"attributions: expected non-empty str names, got {name!r}")
        if name in reserved:
            raise ValueError(f"attributions: {name!r} is a built-in view; pick another name")
        if not callable(cls):
            raise TypeError(
                f"attributions[{name!r}]: expected an attribution class taking the model "
                f"(e.g. captum.attr.IntegratedGradients), got {cls!r}"
            )
    return dict(attributions)


class Explorer(Pictured, w.VBox):
    """Zeiler & Fergus for one model, in one widget.

    Parameters
    ----------
    model : nn.Module, optional
        Default: the bundled trained ZFNet-style model (:func:`zfwidgets.load_default`).
    images : tensor (N, C, H, W), list of tensors or PIL images, or a Dataset, optional
        The image strip. Default: the bundled images (the default model's test images, or
        the bundled photos through ``transform`` for another model).
    dataset : optional
        Where the top-9 of a unit are searched (anything :func:`zfwidgets.mine` accepts).
        Default: ``images``.
    classes : list of str, optional
        Class names, for predictions and occlusion.
    layers : list of str, optional
        The layers offered; default every ``nn.Conv2d`` the forward calls, in call order (the
        last one is shown first).
    atlas : Atlas or path, optional
        A precomputed top-9 atlas of ``dataset`` (skips mining), or the folder of one
        (``atlas.save("atlas/")``, ``python -m zfwidgets mine --out atlas/``): its units are
        read from the stored tiles, and a whole-layer overview of it is shown. Layers it lacks
        are mined from ``dataset`` when shown. A folder that is missing, damaged, from another
        model or from another dataset is not used: the Explorer says why and mines instead.
    transform : torchvision transform, optional
        The preprocessing the model expects: applied to PIL images and uploads, and its
        ``Normalize`` is undone for display. Default: resize/crop 224 + ImageNet statistics
        (or the default model's own).
    mean, std : optional
        Display statistics when ``transform`` has no ``Normalize``.
    occlusion : bool
        Show the occlusion maps (one batched sweep per image).
    attributions : dict name -> attribution class, optional
        More heatmap views beside occlusion, e.g. ``{"Integrated Gradients":
        captum.attr.IntegratedGradients}``: each class is instantiated as ``cls(model)`` and
        its ``attribute(x, target=predicted class)`` is shown as the absolute value summed over
        channels. Any Captum method fits; Captum itself stays optional.
    attribution_views : bool
        Add the "Grad-CAM", "saliency", "guided backprop" and "deconvnet" views (docs/method.md
        Sec. 2 and 4) to the occlusion widget: the three projections are of the selected unit
        when a feature map is selected, else of the predicted class score.
    feature_vis : bool or dict
        Show the selected map's feature visualisation (docs/method.md, "Feature
        visualisation": the input its channel responds to most, :func:`zfwidgets.feature_vis`
        at the images' size) beside its two projections. Computed once per (layer, channel)
        in the background (progress in the unit view's caption; a newer selection cancels
        it), kept for the session, or read from the atlas when it stores them
        (``atlas.render(feature_vis=True)``). A dict sets some of ``steps``, ``lr``,
        ``transforms``, ``seed``, ``objective``; ``False`` leaves it out.

    Examples
    --------
    >>> from zfwidgets import Explorer
    >>> e = Explorer()                               # bundled model and images

    Your own model (not run here: it needs your model and data):

    >>> Explorer(model, dataset=val_set, classes=names, transform=weights.transforms())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        images: Any = None,
        dataset: Any = None,
        classes: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        atlas: Any = None,
        *,
        transform: Any = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        occlusion: bool = True,
        attributions: Mapping[str, Any] | None = None,
        attribution_views: bool = True,
        feature_vis: bool | Mapping[str, Any] = True,
        max_images: int = 32,
        **kwargs: Any,
    ) -> None:
        from ..atlas.render import check_feature_vis

        #: the settings of the unit view's feature visualisations (None: not shown)
        self._fv = check_feature_vis(
            dict(feature_vis) if isinstance(feature_vis, Mapping) else feature_vis
        )
        default = None
        if model is None:
            from ..data import load_default, load_default_atlas

            default = load_default()
            model = default.model
            transform = default.transform if transform is None else transform
            classes = default.classes if classes is None else classes
            if images is None:
                images = default.images
            if dataset is None and atlas is None:
                dataset = default.images
                atlas = load_default_atlas(default)
        check_model(model)
        self.model = model
        self.attributions = _check_attributions(attributions)
        self.attribution_views = bool(attribution_views)
        #: view name -> the error raised while computing it for the current image/unit
        self.attribution_errors: dict[str, str] = {}
        channels = _in_channels(model)
        if transform is None:
            transform = _default_transform(channels)
        self.transform = transform
        opened = open_atlas(atlas, model=model, data=dataset, transform=transform)
        atlas = opened.atlas
        #: What the Explorer says about the atlas it was given (empty: nothing to say).
        self.atlas_notes: list[str] = list(opened.notes)
        if mean is None and std is None:
            try:
                mean, std = mean_std_of(transform)
            except ValueError:
                mean = std = None
        self._mean, self._std = mean, std
        if images is None:
            from ..data import load_photos

            images = list(load_photos().values())
        self.images = self._load_images(images, max_images)
        self.dataset = dataset
        if dataset is None and (atlas is None or atlas.source is not None):
            self.dataset = torch.stack(self.images)  # mine over the strip
        self.classes = list(classes) if classes is not None else None
        if layers is None:  # the convolutions the forward calls, in call order
            layers = called_convs(model, (1, *self.images[0].shape))
        else:
            layers = [resolve_layer(model, layer)[0] for layer in layers]
        if not layers:
            raise ValueError(f"model: {type(model).__name__} has no nn.Conv2d layer to explore")
        lacking = [n for n in layers if atlas is not None and n not in atlas.layers]
        if lacking and opened.stored:
            how = (
                "mined from the dataset when shown" if dataset is not None else "no dataset to mine"
            )
            self.atlas_notes.append(f"Not in the atlas: {', '.join(lacking)} ({how}).")
        self.layers = layers
        self.index = 0
        self._runner = Runner(f"zfwidgets.Explorer-{id(self):x}")
        self._need_full = True  # the image changed: Grad-CAM and Captum views are due too
        # the unit view's feature visualisations: their own runner (a click's projections must
        # not cancel them, nor they the projections), (layer, channel) -> display tile
        self._fv_runner = Runner(
            f"zfwidgets.Explorer-fv-{id(self):x}", on_progress=self._fv_progress
        )
        self._fv_cache: dict[tuple[str, int], torch.Tensor] = {}
        self._fv_failed: set[tuple[str, int]] = set()  # not asked again (the note says why)
        self._fv_note = ""
        self._unit_caption = ""  # the unit view's caption without the feature-vis note
        self._unit_shown: tuple[torch.Tensor, str, int | None, dict] | None = None

        self.status = w.Label("")
        self.strip = Gallery(
            self._display(torch.stack(self.images[: self._strip_count()])),
            self._captions(),
            title="images · click one to explore it, or upload your own",
            selected=0,
            tile_size=72,
            columns=min(len(self.images), 16),
        )
        self.upload = w.FileUpload(
            accept="image/*",
            multiple=False,
            description="upload image",
            layout=w.Layout(width="auto"),  # JupyterLab's fixed button width cut the label
        )
        self.message = w.Label("")
        start = layers[-1]
        # without a dataset only stored tiles can be shown; with one, any layer of the atlas
        self._atlas_layers = (
            [] if atlas is None else (opened.stored if dataset is None else list(atlas.layers))
        )
        if atlas is not None and start not in self._atlas_layers:
            # open on the deepest layer the atlas can show
            start = next((n for n in reversed(layers) if n in self._atlas_layers), start)
        self.grid = LayerGrid(model, self.images[0], start, mean=mean, std=std, layers=layers)
        self.unit = Gallery(
            self._display(self.current.unsqueeze(0)),
            ["image"],
            title="selected unit",
            caption=_UNIT_HINT,
            selectable=False,
            tile_size=160,
        )
        children: list[w.Widget] = [
            self.status,
            self.strip,
            w.HBox([self.upload, self.message]),
            self.grid,
            self.unit,
        ]
        self.atlas_note = w.Label(" ".join(self.atlas_notes))
        self.atlas_note.add_class("zf-atlas-note")
        if self.atlas_notes:
            children.append(self.atlas_note)
        self.top9 = self._make_top9(atlas)
        #: The atlas in use (None: the top-9 are mined).
        self.atlas = atlas
        self.overview = None
        if atlas is not None:
            # the whole layer at once (Fig. 2 for every unit); built when first opened, unless
            # the atlas has stored tiles (then a page is a few file reads)
            self._overview_atlas = atlas
            self.overview_box = w.Accordion(children=[w.VBox([])], titles=("whole layer",))
            self.overview_box.add_class("zf-overview-box")
            self.overview_box.observe(self._on_overview_open, "selected_index")
            children.append(self.overview_box)
            if opened.stored:
                self.overview_box.selected_index = 0
        if self.top9 is not None:
            children.append(self.top9)
        self.predictions = self._make_predictions()
        self.occlusion_map = self._make_occlusion() if occlusion else None
        self._request_views()
        row = [x for x in (self.occlusion_map, self.predictions) if x is not None]
        if row:
            # side by side where they fit, one under the other where they don't
            children.append(w.HBox(row, layout=w.Layout(flex_flow="row wrap", grid_gap="8px 32px")))
        super().__init__(children=children, **kwargs)
        self.add_class("zf-explorer")

        self.strip.observe(self._on_pick, "selected")
        self.upload.observe(self._on_upload, "value")
        self.grid.observe(self._on_channel, "channel")
        self.grid.observe(self._on_layer, "layer")
        if self.top9 is not None and hasattr(self.top9, "selected"):
            self.top9.observe(self._on_top9_pick, "selected")

    # -- the whole-layer overview -----------------------------------------------------------
    def _on_overview_open(self, change: dict) -> None:
        if change["new"] is None or self.overview is not None:
            return
        from .layer_overview import LayerOverview

        atlas = self._overview_atlas
        layer = self.grid.layer if self.grid.layer in atlas.layers else atlas.layers[0]
        self.overview = LayerOverview(atlas, layer, max_width=self.grid.max_width)
        self.overview.observe(self._on_overview_pick, "selected")
        self.overview_box.children = [self.overview]

    def _on_overview_pick(self, change: dict) -> None:
        """A unit clicked in the overview: select it in the grid (the unit view, the top-9 and
        the heatmaps follow)."""
        c = change["new"]
        if c is None:
            return
        layer = self.overview.layer
        if layer != self.grid.layer:
            if layer not in self.grid.layers:
                self.message.value = f"{layer} is not among the layers the grid offers"
                return
            self.grid.layer = layer
        self.grid.channel = c

    # -- images ----------------------------------------------------------------------------
    def _load_images(self, images: Any, max_images: int) -> list[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            items = list(images)
        else:
            try:
                n = len(images)
            except TypeError as e:
                raise TypeError(
                    f"images: expected a tensor, a list or a Dataset, got {type(images).__name__}"
                ) from e
            items = [images[i] for i in range(min(n, max_images))]
        if not items:
            raise ValueError("images: expected at least one image, got none")
        device = model_device(self.model)
        out = []
        for i, item in enumerate(items[:max_images]):
            x = _to_tensor(item, self.transform, i).to(device)
            check_images(self.model, x.unsqueeze(0), name=f"images[{i}]")
            out.append(x)
        shapes = {tuple(x.shape) for x in out}
        if len(shapes) > 1:
            raise ValueError(f"images: expected one size, got {sorted(shapes)}")
        return out

    def _strip_count(self) -> int:
        return len(self.images)

    def _captions(self) -> list[str]:
        return [f"image {i}" for i in range(len(self.images))]

    def _display(self, x: torch.Tensor) -> torch.Tensor:
        return fit_channels(display_image(x, self._mean, self._std))

    @property
    def current(self) -> torch.Tensor:
        """The image being explored, (C, H, W) on the model's device."""
        return self.images[self.index]

    # -- parts that other modules provide ----------------------------------------------------
    def _make_top9(self, atlas: Any):
        from .top_nine import TopNine

        kwargs = {"mean": self._mean, "std": self._std, "classes": self.classes}
        if atlas is None:
            kwargs["k"] = min(9, len(self.dataset))
        layer = self.grid.layer
        if self.dataset is None and layer not in self._atlas_layers:
            # nothing to mine: start on a layer the atlas can show
            layer = (self._atlas_layers or atlas.layers)[-1]
        return TopNine(self.model, self.dataset, layer=layer, channel=0, atlas=atlas, **kwargs)

    def _make_predictions(self):
        from .predictions import Predictions

        return Predictions(self.model, self.current, classes=self.classes)

    def _make_occlusion(self):
        from .occlusion_map import OcclusionMap

        occ = OcclusionMap(
            self.model, self.current, classes=self.classes, mean=self._mean, std=self._std
        )
        # as wide as its image at most: a long caption wraps instead of pushing the
        # predictions off to the right
        occ.layout.max_width = f"{occ.max_width}px"
        return occ

    # -- reactions -------------------------------------------------------------------------
    def _busy(self, text: str) -> None:
        self.status.value = text

    def select_image(self, index: int) -> None:
        """Explore ``images[index]``: every view follows."""
        if not 0 <= index < len(self.images):
            raise ValueError(f"index: expected an int in [0, {len(self.images)}), got {index}")
        self.index = index
        x = self.current
        self.grid.set_image(x)
        if self.predictions is not None:
            self.predictions.set_image(x)
        view = None
        if self.occlusion_map is not None:
            view = self.occlusion_map.view
            self.occlusion_map.set_image(x)
        self._need_full = True
        self._request_views(keep_view=view)
        if self.strip.selected != index:
            self.strip.selected = index

    def add_image(self, x: torch.Tensor, caption: str = "") -> int:
        """Append an image (C, H, W), normalised like the others, to the strip; its index."""
        x = x.to(model_device(self.model))
        check_images(self.model, x.unsqueeze(0), name="image")
        if tuple(x.shape) != tuple(self.images[0].shape):
            raise ValueError(
                f"image: expected shape {tuple(self.images[0].shape)} like the other images, "
                f"got {tuple(x.shape)}"
            )
        self.images.append(x)
        captions = list(self.strip.captions) + [caption or f"image {len(self.images) - 1}"]
        self.strip.set_images(self._display(torch.stack(self.images)), captions)
        return len(self.images) - 1

    def _on_pick(self, change: dict) -> None:
        if change["new"] is not None and change["new"] != self.index:
            self.select_image(change["new"])

    def _on_top9_pick(self, change: dict) -> None:
        index = change["new"]
        if index is None:
            return
        if self.dataset is None:
            self.message.value = (
                f"dataset image {index}: the atlas came without its images; pass dataset= to "
                "open them"
            )
            return
        from ..base.source import ImageSource

        try:  # a dataset of tensors is already preprocessed
            x = ImageSource(self.dataset).get(int(index))
        except TypeError:  # PIL images: through the model's transform
            x = ImageSource(self.dataset, transform=self.transform).get(int(index))
        self.select_image(self.add_image(x, f"dataset image {index}"))

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[-1]
        name = str(item.get("name", "upload"))
        try:
            x = self.load_upload(bytes(item["content"]), name)
            self.select_image(self.add_image(x, name))
            self.message.value = f"{name}: added"
        except Exception as exc:  # every failure is shown in the widget, whatever its type
            text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            self.message.value = f"{name}: {text}"

    def load_upload(self, data: bytes, name: str = "upload") -> torch.Tensor:
        """Decode an uploaded file as a browser shows it (:func:`zfwidgets.base.uploads.decode_upload`:
        EXIF orientation, 16-bit/float/palette/CMYK/alpha converted, formats checked from the
        bytes, a pixel budget before decoding) into a model input through ``transform``."""
        img = decode_upload(data, channels=_in_channels(self.model))
        return _to_tensor(img, self.transform, 0)

    def _on_layer(self, change: dict) -> None:
        if self.top9 is not None:
            try:
                self.top9.layer = change["new"]
                self.message.value = ""
            except (ValueError, t.TraitError) as exc:  # not in the atlas, no data to mine it
                self.message.value = f"top-9: {exc}"
        if self.overview is not None and change["new"] in self.overview.layers:
            self.overview.layer = change["new"]
        self._request_views()

    def _on_channel(self, change: dict) -> None:
        if (
            change["new"] is not None
            and self.top9 is not None
            and self.top9.layer == self.grid.layer
        ):
            self.top9.channel = change["new"]
        self._request_views()

    def close(self) -> None:
        for name in ("_runner", "_fv_runner"):
            runner = getattr(self, name, None)  # None when __init__ failed early
            if runner is not None:
                runner.close()
        super().close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every part shows the latest request (for scripts and tests); False when
        ``timeout`` seconds ran out first."""
        parts = [self.grid, self.predictions, self.occlusion_map]
        ok = all(p.wait(timeout) for p in parts if p is not None)
        if self.top9 is not None:
            try:
                self.top9.wait(timeout)
            except TimeoutError:
                ok = False
            except RuntimeError:
                pass  # shown in the widget
        ok = self._runner.join(timeout) and ok
        return self._fv_runner.join(timeout) and ok

    # -- the unit view and the attribution views in the occlusion widget -------------------
    def attribution_maps(self, *, unit_only: bool = False) -> dict[str, torch.Tensor]:
        """The heatmaps shown beside occlusion for the current image, name -> (H, W).

        ``"Grad-CAM"``: :func:`zfwidgets.grad_cam` (last convolution, predicted class),
        upsampled. ``"saliency"``, ``"guided backprop"``, ``"deconvnet"``: the projection of
        the selected feature map's strongest unit (or, with none selected, of the predicted
        class score) by that rule, ``|.|`` summed over channels. Then each method of
        ``attributions``. A method that fails is left out; its error is kept in
        :attr:`attribution_errors`. Computed by
        :func:`zfwidgets.engine.attribution.attribution_maps`.
        """
        x = self.current.unsqueeze(0)
        out = attribution_maps(
            self.model,
            x,
            layer=self.grid.layer,
            channel=self.grid.channel,
            image_maps=not unit_only,
            **self._view_options(),
        )
        self._merge_errors(out, unit_only)
        return out.maps

    def _view_options(self) -> dict[str, Any]:
        """Which views :func:`attribution_maps` computes (read on the kernel thread)."""
        return {"views": self.attribution_views, "methods": dict(self.attributions)}

    def _merge_errors(self, out: AttributionMaps, unit_only: bool) -> None:
        if not unit_only:
            self.attribution_errors = {}
        for name in out.tried:
            self.attribution_errors.pop(name, None)
        self.attribution_errors.update(out.errors)

    def _request_views(self, *, keep_view: str | None = None) -> None:
        """The unit view and the heatmap views for the current image and unit, computed
        through the Explorer's job runner (one projection per rule per click)."""
        x = self.current.unsqueeze(0)
        layer, c = self.grid.layer, self.grid.channel
        full = self._need_full
        views = self.occlusion_map is not None and (self.attribution_views or self.attributions)
        options = self._view_options()
        self._busy("computing…")

        def work(job: Job) -> tuple[dict[str, torch.Tensor], AttributionMaps | None]:
            model = module_tree_copy(self.model)
            if views:
                out = attribution_maps(model, x, layer=layer, channel=c, image_maps=full, **options)
                return out.projections, out
            if c is None:
                return {}, None
            # the unit view only: its two projections, errors shown in the status line
            return {
                rule: backprop(model, x, rule=rule, layer=layer, channel=c)
                for rule in ("deconv", "guided")
            }, None

        def apply(result: tuple[dict[str, torch.Tensor], AttributionMaps | None]) -> None:
            projections, out = result
            if full:
                self._need_full = False
            self._show_unit(x, layer, c, projections)
            if out is not None:
                self._merge_errors(out, not full)
                occ = self.occlusion_map
                with occ.hold_sync():
                    for name, values in out.maps.items():
                        occ.show_map(name, values, show=False)
                    if keep_view is not None and keep_view in [v["name"] for v in occ.views]:
                        occ.view = keep_view
            self._busy("")

        def error(exc: BaseException) -> None:
            self._busy(f"{type(exc).__name__}: {exc}")

        self._runner.submit(work, apply, error=error, wait=True)

    def _show_unit(
        self, x: torch.Tensor, layer: str, c: int | None, projections: dict[str, torch.Tensor]
    ) -> None:
        """The image beside the projections of the selected map's strongest unit (tiles and
        caption in one message, so the front end never shows one without the other)."""
        image = self._display(x)
        self._unit_shown = (x, layer, c, projections)
        if c is None or not {"deconv", "guided"} <= projections.keys():
            with self.unit.hold_sync():
                self.unit.set_images(image, ["image"])
                self.unit.caption = _UNIT_HINT
            return
        parts = [
            image,
            fit_channels(contrast_normalize(projections["deconv"])),
            fit_channels(contrast_normalize(projections["guided"])),
        ]
        names = ["image", "deconvnet (Zeiler & Fergus)", "guided backprop"]
        caption = (
            f"{layer} · channel {c}: its strongest unit in this image, projected to pixel space"
        )
        if self._fv is not None:
            key = (layer, c)
            if key not in self._fv_cache and key not in self._fv_failed:
                self._request_fv(layer, c, tuple(x.shape[-2:]))  # stored: cached at once
            fv = self._fv_cache.get(key)
            if fv is not None and fv.shape[1:] == parts[1].shape[1:]:
                parts.append(fv.to(parts[1].device))
                names.append("feature visualisation")
                self._fv_note = ""
        self._unit_caption = caption
        with self.unit.hold_sync():
            self.unit.set_images(torch.cat(parts), names)
            self.unit.caption = self._with_fv_note(caption)

    # -- the unit view's feature visualisation ----------------------------------------------
    def _request_fv(self, layer: str, c: int, size: tuple[int, int]) -> None:
        """The feature visualisation of (layer, c): from the atlas when it stores one, else
        computed through the feature-visualisation runner (a newer request cancels it)."""
        atlas = self.atlas
        if (
            atlas is not None
            and layer in atlas.layers
            and hasattr(atlas, "has_feature_vis")
            and atlas.has_feature_vis(layer)
            and tuple(atlas.input_size) == size
        ):
            try:
                px = torch.from_numpy(atlas.feature_vis_image(layer, c))
                tile = (px.float() / 255).reshape(*px.shape[:2], -1).permute(2, 0, 1)
                self._fv_cache[(layer, c)] = fit_channels(tile.unsqueeze(0))
                self._fv_note = ""
                return
            except (ValueError, OSError) as exc:  # a missing or damaged file: compute it
                self._fv_note = f"stored feature visualisation unreadable ({exc}); computing"
        settings = dict(self._fv)
        mean, std = self._mean, self._std
        self._fv_note = "feature visualisation: 0%"

        def work(job: Job) -> torch.Tensor:
            from ..engine.featurevis import feature_vis

            out = feature_vis(
                module_tree_copy(self.model),
                layer,
                [c],
                size=size,
                mean=mean,
                std=std,
                progress=job.progress,
                **settings,
            )
            return fit_channels(out.images)

        def apply(tile: torch.Tensor) -> None:
            self._fv_cache[(layer, c)] = tile
            self._fv_note = ""
            self._reshow_unit()

        def error(exc: BaseException) -> None:
            self._fv_failed.add((layer, c))
            self._fv_note = f"feature visualisation failed: {type(exc).__name__}: {exc}"
            self._reshow_unit()

        self._fv_runner.submit(work, apply, error=error, key=(layer, c))

    def _with_fv_note(self, caption: str) -> str:
        return f"{caption} · {self._fv_note}" if self._fv_note else caption

    def _fv_progress(self, fraction: float) -> None:
        self._fv_note = f"feature visualisation: {round(100 * fraction)}%"
        shown = self._unit_shown
        if shown is not None and shown[2] is not None:
            self.unit.caption = self._with_fv_note(self._unit_caption)

    def _reshow_unit(self) -> None:
        shown = self._unit_shown
        if shown is not None and (shown[1], shown[2]) == (self.grid.layer, self.grid.channel):
            self._show_unit(*shown)
