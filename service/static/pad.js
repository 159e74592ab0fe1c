// The drawing pad: white strokes on a black canvas, drawn with a mouse, a pen or a finger (Pointer
// Events cover all three; the canvas's CSS `touch-action: none` keeps a finger from scrolling the page).

export class DrawingPad {
  /** `onStroke` is called when a stroke begins, `onStrokeEnd` when it ends. */
  constructor(canvas, { onStroke, onStrokeEnd }) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.onStroke = onStroke;
    this.onStrokeEnd = onStrokeEnd;
    this.pointer = null; // the id of the pointer drawing now: one stroke at a time
    this.last = null;
    canvas.addEventListener("pointerdown", (event) => this.begin(event));
    canvas.addEventListener("pointermove", (event) => this.extend(event));
    for (const type of ["pointerup", "pointercancel"]) {
      canvas.addEventListener(type, (event) => this.end(event));
    }
    this.clear();
  }

  clear() {
    const { context, canvas } = this;
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    this.empty = true;
  }

  /** Ink intensity in [0, 1] of every pixel, row-major (the canvas is grey: red is enough). */
  ink() {
    const { width, height } = this.canvas;
    const rgba = this.context.getImageData(0, 0, width, height).data;
    const ink = new Float32Array(width * height);
    for (let i = 0; i < ink.length; i++) ink[i] = rgba[4 * i] / 255;
    return { ink, width, height };
  }

  /** The event's position in canvas pixels (the canvas is scaled by CSS to fit the screen). */
  position(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  }

  begin(event) {
    if (this.pointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    this.pointer = event.pointerId;
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.position(event);
    this.empty = false;
    this.onStroke();
    this.line([this.last]);
  }

  extend(event) {
    if (event.pointerId !== this.pointer) return;
    event.preventDefault();
    const points = (event.getCoalescedEvents?.() ?? [event]).map((e) => this.position(e));
    this.line(points);
  }

  end(event) {
    if (event.pointerId !== this.pointer) return;
    this.pointer = null;
    this.onStrokeEnd();
  }

  /** A line from the last point through `points` (a dot when it does not move). */
  line(points) {
    const { context } = this;
    context.strokeStyle = "#fff";
    context.lineWidth = this.canvas.width / 14; // about MNIST's stroke once the digit is 20 px tall
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(this.last.x, this.last.y);
    for (const point of points) context.lineTo(point.x, point.y);
    if (points.length === 1 && points[0] === this.last) context.lineTo(this.last.x + 0.01, this.last.y);
    context.stroke();
    this.last = points[points.length - 1];
  }
}
