// Edit one key's configuration (S3): PATCH /api/keys/:id; the change applies to the next request.
import { useState, type FormEvent } from "react";
import { patchKey, type KeyView } from "../lib/api.ts";
import { ErrorState } from "../lib/ui.tsx";
import { formOf, KeyFields, patchOf } from "./KeyForm.tsx";

export function EditKey({ view, onSaved, onCancel }: { view: KeyView; onSaved: () => void; onCancel: () => void }) {
  const [values, setValues] = useState(formOf(view.config));
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const p = patchOf(values);
    if (!p.ok) return setProblem(p.message);
    setProblem(null);
    setBusy(true);
    try {
      await patchKey(view.keyId, p.patch);
      onSaved();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit} aria-labelledby="edit-title" className="panel">
      <h2 id="edit-title">Edit {view.keyId}</h2>
      {problem ? <p role="alert" className="state error">{problem}</p> : null}
      {error ? <ErrorState error={error} /> : null}
      <KeyFields values={values} set={setValues} prefix="edit" regionLocked={view.home !== "eu"} />
      <div className="actions">
        <button type="submit" disabled={busy}>Save changes</button>
        <button type="button" onClick={onCancel}>Cancel</button>
      </div>
    </form>
  );
}
