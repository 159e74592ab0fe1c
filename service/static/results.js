// Showing answers: status lines, top-k bars, and explanation figures.

/** `text` in a status line; `kind` ("error", "note" or "") styles it. */
export function setStatus(element, text, kind = "") {
  element.textContent = text;
  element.dataset.kind = kind;
}

/** A probability as a percentage to 0.1 %, saying so where that rounds it to 0 or 100. */
export function percent(score) {
  if (score < 0.0005) return "< 0.1 %";
  if (score > 0.9995) return "> 99.9 %";
  return `${(score * 100).toFixed(1)} %`;
}

function span(className, text = "") {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

/** The top-k predictions ({label, score}, best first) as labelled bars. */
export function showPredictions(list, predictions) {
  list.replaceChildren(
    ...predictions.map(({ label, score }) => {
      const item = document.createElement("li");
      const name = span("label", label);
      name.title = label;
      const bar = span("bar");
      const fill = span("fill");
      fill.style.width = `${score * 100}%`;
      bar.append(fill);
      item.append(name, bar, span("score", percent(score)));
      return item;
    }),
  );
}

/** A figure (an img and a figcaption holding a `.caption`) showing the image `src`. */
export function showFigure(figure, src, caption) {
  const image = figure.querySelector("img");
  image.src = src;
  image.hidden = false;
  setStatus(figure.querySelector(".caption"), caption);
  figure.hidden = false;
}

/** The same figure with no image, saying why. */
export function noteFigure(figure, message, kind = "note") {
  const image = figure.querySelector("img");
  image.hidden = true;
  image.removeAttribute("src");
  setStatus(figure.querySelector(".caption"), message, kind);
  figure.hidden = false;
}
