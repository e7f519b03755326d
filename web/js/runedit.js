// The run page's own edits: the run's tags, its note, and deleting it.

import { api } from "./api.js";
import { tagEditor } from "./tags.js";
import { showError } from "./util.js";

const $ = (id) => document.getElementById(id);

export class RunEdits {
  /** `onSaved(run)` gets the run as stored after an edit. */
  constructor(runId, onSaved) {
    this.base = `/api/v1/runs/${encodeURIComponent(runId)}`;
    this.onSaved = onSaved;
    this.run = null;
    this.tags = null;
    this.shownNote = null; // the note as last shown: a different text is an edit in progress
    this.wire();
  }

  /** Show the run's tags and note, keeping a note being edited. */
  show(run) {
    this.run = run;
    for (const id of ["note", "note-save", "delete"]) $(id).disabled = false;
    if (this.tags) this.tags.update(run);
    else {
      this.tags = tagEditor(run, { onPick: (tag) => (location.href = `/?tag=${encodeURIComponent(tag)}`), onSaved: this.onSaved });
      $("run-tags").replaceChildren(this.tags);
    }
    const note = $("note");
    if (this.shownNote === null || note.value === this.shownNote) note.value = run.note;
    this.shownNote = run.note;
  }

  wire() {
    $("note").addEventListener("input", () => ($("note-state").textContent = ""));
    $("note-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const run = await api(this.base, { method: "PATCH", body: { note: $("note").value } });
        this.shownNote = null; // show the note as stored
        this.onSaved(run);
        $("note-state").textContent = "Saved.";
      } catch (error) {
        showError(error);
      }
    });
    $("delete").addEventListener("click", async () => {
      if (!window.confirm(`Delete the run "${this.run.name}" with all its points and commands?`)) return;
      try {
        await api(this.base, { method: "DELETE" });
        location.href = "/";
      } catch (error) {
        showError(`Could not delete this run: ${error.message}`);
      }
    });
  }
}
