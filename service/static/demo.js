// The demo page: a digit drawn on the pad goes to the MNIST ConvNet, a photo chosen or dropped goes to
// the photo model; each panel shows the top-k labels, then the explanations of the answer.

import { mnistPixels, SIZE } from "./digit.js";
import { DrawingPad } from "./pad.js";
import { noteFigure, percent, setStatus, showFigure, showPredictions } from "./results.js";
import { classify, explain, features, RequestFailed } from "./service.js";

const byId = (id) => document.getElementById(id);

/** One piece of work at a time in a panel: starting one aborts the one before, and the panel is
 * `aria-busy` until the latest one has finished. */
class Latest {
  constructor(panel) {
    this.panel = panel;
    this.controller = null;
  }

  /** Abort the work under way; `busy` says whether an answer is still to come. */
  stop(busy) {
    this.controller?.abort();
    this.controller = null;
    this.panel.setAttribute("aria-busy", String(busy));
  }

  async run(work) {
    this.stop(true);
    const controller = new AbortController();
    this.controller = controller;
    try {
      await work(controller.signal);
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      if (this.controller === controller) this.stop(false);
    }
  }
}

/** Classify `file` with `model` into the panel's list; null (and the error shown) when refused. */
async function classifyInto(model, file, { list, status }, signal) {
  setStatus(status, "Classifying…");
  try {
    const answer = await classify(model, file, signal);
    showPredictions(list, answer.predictions);
    setStatus(status, `${answer.model}:${answer.version}`);
    return answer;
  } catch (error) {
    if (!(error instanceof RequestFailed)) throw error;
    list.replaceChildren();
    setStatus(status, error.message, "error");
    return null;
  }
}

/** Say in `figure` why an explanation is missing: a service without its route (404), or a refusal. */
function explanationFailed(figure, error, what) {
  if (!(error instanceof RequestFailed)) throw error;
  if (error.status === 404) {
    noteFigure(figure, `${what} unavailable: this service does not offer it (404).`);
  } else {
    noteFigure(figure, `${what} failed. ${error.message}`, "error");
  }
}

/** The 28x28 pixels drawn on the model-input canvas, and that canvas as a PNG file. */
function inputFile(canvas, pixels) {
  const context = canvas.getContext("2d");
  const image = context.createImageData(SIZE, SIZE);
  pixels.forEach((value, i) => image.data.set([value, value, value, 255], 4 * i));
  context.putImageData(image, 0, 0);
  return new Promise((resolve) =>
    canvas.toBlob((blob) => resolve(new File([blob], "digit.png", { type: "image/png" })), "image/png"),
  );
}

function digitPanel() {
  const panel = byId("digit");
  const shown = { list: byId("digit-predictions"), status: byId("digit-status") };
  const [heatmap, maps, sobel] = ["digit-heatmap", "digit-maps", "digit-sobel"].map(byId);
  const layer = byId("digit-layer");
  const latest = new Latest(panel);
  const pad = new DrawingPad(byId("digit-pad"), {
    onStroke: () => latest.stop(true),
    onStrokeEnd: () => latest.run(analyse),
  });

  async function explainDigit(file, signal) {
    try {
      const answer = await explain("mnist", file, signal);
      const { label, score } = answer.target;
      showFigure(heatmap, answer.overlay, `Grad-CAM of “${label}” (${percent(score)}) at layer ${answer.layer}`);
    } catch (error) {
      explanationFailed(heatmap, error, "Grad-CAM");
    }
  }

  async function showFeatures(file, signal) {
    try {
      const answer = await features("mnist", file, layer.value, signal);
      layer.replaceChildren(...answer.layers.map((name) => new Option(name, name, false, name === answer.layer)));
      layer.hidden = false;
      const [height, width] = answer.size;
      showFigure(maps, answer.maps, `${answer.channels} feature maps (${width}×${height}) of convolution layer`);
      showFigure(sobel, answer.sobel, "Sobel x, y and gradient magnitude of the input, by the same conv2d");
    } catch (error) {
      explanationFailed(maps, error, "Feature maps");
      layer.hidden = true;
      sobel.hidden = true;
    }
  }

  async function analyse(signal) {
    const { ink, width, height } = pad.ink();
    const pixels = mnistPixels(ink, width, height);
    if (pixels === null) return;
    const file = await inputFile(byId("digit-input"), pixels);
    if ((await classifyInto("mnist", file, shown, signal)) === null) {
      for (const figure of [heatmap, maps, sobel]) figure.hidden = true;
      return;
    }
    await Promise.all([explainDigit(file, signal), showFeatures(file, signal)]);
  }

  layer.addEventListener("change", () => latest.run(analyse));
  byId("digit-clear").addEventListener("click", () => {
    latest.stop(false);
    pad.clear();
    byId("digit-input").getContext("2d").clearRect(0, 0, SIZE, SIZE);
    shown.list.replaceChildren();
    setStatus(shown.status, "");
    for (const figure of [heatmap, maps, sobel]) figure.hidden = true;
  });
}

function photoPanel() {
  const panel = byId("photo");
  const shown = { list: byId("photo-predictions"), status: byId("photo-status") };
  const [drop, chooser, preview, heatmap] = ["photo-drop", "photo-file", "photo-preview", "photo-heatmap"].map(byId);
  const latest = new Latest(panel);

  async function analyse(file, signal) {
    URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    heatmap.hidden = true;
    if ((await classifyInto("photo", file, shown, signal)) === null) return;
    try {
      const answer = await explain("photo", file, signal);
      const { label, score } = answer.target;
      const { width, height } = answer.heatmap;
      showFigure(heatmap, answer.overlay, `Grad-CAM of “${label}” (${percent(score)}) on the ${width}×${height} crop the model sees`);
    } catch (error) {
      explanationFailed(heatmap, error, "Grad-CAM");
    }
  }

  const start = (file) => file && latest.run((signal) => analyse(file, signal));
  preview.addEventListener("error", () => {
    preview.hidden = true; // not an image the browser can show either
  });
  chooser.addEventListener("change", () => start(chooser.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    start(event.dataTransfer.files[0]);
  });
  // A file dropped beside the drop zone would otherwise replace the page with the file.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
}

digitPanel();
photoPanel();
