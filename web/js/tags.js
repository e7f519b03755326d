// Tag chips, on the run list and the run page: a click on a tag picks it (to filter by),
// its × removes it and + adds one. A change saves the whole list with PATCH.

import { api } from "./api.js";
import { el, showError } from "./util.js";

const MAX_LENGTH = 50; // the server's limit on one tag

/** A chip for `tag`: `onPick(tag)` (if given) on a click on its name, `onRemove(tag)` on its ×. */
export function chip(tag, { onPick, onRemove, removeLabel = `remove tag ${tag}` }) {
  return el(
    "span",
    { className: "chip", "data-tag": tag },
    onPick
      ? el("button", { type: "button", className: "chip-name", title: `runs tagged ${tag}`, text: tag, onclick: () => onPick(tag) })
      : el("span", { className: "chip-name", text: tag }),
    el("button", { type: "button", className: "chip-x", "aria-label": removeLabel, title: removeLabel, text: "×", onclick: () => onRemove(tag) }),
  );
}

/** The run's tags, editable. `onSaved(run)` gets the run as stored after a change; the
 * element's `update(run)` shows a newer run and keeps a tag being typed. */
export function tagEditor(run, { onPick, onSaved }) {
  const chips = el("span", { className: "chips" });
  const add = el("button", { type: "button", className: "chip-add", title: "add a tag", "aria-label": `add a tag to ${run.name}`, text: "+" });
  const box = el("span", { className: "tags" }, chips, add);

  // Shown at once and saved in order: a second click before the first answer builds on
  // the first, never on the list as it was.
  let saving = Promise.resolve();
  const save = (tags) => {
    box.update({ ...run, tags });
    saving = saving.then(async () => {
      try {
        onSaved(await api(`/api/v1/runs/${encodeURIComponent(run.id)}`, { method: "PATCH", body: { tags } }));
      } catch (error) {
        showError(error);
      }
    });
  };
  const remove = (tag) => save(run.tags.filter((t) => t !== tag));

  add.addEventListener("click", () => {
    const input = el("input", { type: "text", className: "tag-input", size: "10", maxlength: String(MAX_LENGTH), placeholder: "tag", "aria-label": `new tag for ${run.name}` });
    let open = true;
    // Removing the focused input fires its blur at once: close only once.
    const close = () => {
      if (!open) return;
      open = false;
      input.replaceWith(add);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
      if (event.key !== "Enter") return;
      event.preventDefault();
      const tag = input.value.trim();
      close();
      if (tag && !run.tags.includes(tag)) save([...run.tags, tag]);
    });
    input.addEventListener("blur", close);
    add.replaceWith(input);
    input.focus();
  });

  box.update = (newer) => {
    run = newer;
    chips.replaceChildren(...run.tags.map((tag) => chip(tag, { onPick, onRemove: remove })));
  };
  box.update(run);
  return box;
}
