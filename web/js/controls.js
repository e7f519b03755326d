// Chart controls shared by the run and compare pages: smoothing, log-y, x axis.

import { el } from "./util.js";

/** Build the toolbar into `parent`; `settings` is changed in place, then `onChange()`. */
export function toolbar(parent, settings, onChange) {
  const smoothing = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(settings.smoothing), id: "smoothing" });
  const shown = el("output", { for: "smoothing", text: settings.smoothing.toFixed(2) });
  smoothing.addEventListener("input", () => {
    settings.smoothing = Number(smoothing.value);
    shown.textContent = settings.smoothing.toFixed(2);
    onChange();
  });
  const logy = el("input", { type: "checkbox", id: "logy" });
  logy.addEventListener("change", () => {
    settings.logy = logy.checked;
    onChange();
  });
  const xmode = el(
    "select",
    { id: "xmode" },
    el("option", { value: "step", text: "step" }),
    el("option", { value: "epoch", text: "epoch" }),
    el("option", { value: "wall", text: "wall time" }),
  );
  xmode.addEventListener("change", () => {
    settings.xmode = xmode.value;
    onChange();
  });
  parent.append(
    el("label", {}, "Smoothing ", smoothing, shown),
    el("label", {}, logy, " log y"),
    el("label", {}, "x axis ", xmode),
  );
}
