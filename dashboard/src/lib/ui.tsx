// Small shared pieces: money formatting, the loading / empty / error states every page
// shows (each says what to do next), a confirmation dialog, and in-app links.
import { useEffect, useRef, useState, type ReactNode } from "react";
import { ApiFailure } from "./api.ts";

/** Micro-dollars as dollars, exactly (six decimals: the ledger's unit, no rounding). */
export function usd(micros: number): string {
  const sign = micros < 0 ? "-" : "";
  const abs = Math.abs(micros);
  return `${sign}$${Math.floor(abs / 1_000_000).toLocaleString("en-US")}.${String(abs % 1_000_000).padStart(6, "0")}`;
}

export function navigate(path: string) {
  if (location.pathname + location.search === path) return;
  history.pushState(null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function Link({ to, children, current }: { to: string; children: ReactNode; current?: boolean }) {
  return (
    <a
      href={to}
      aria-current={current ? "page" : undefined}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(to);
      }}
    >
      {children}
    </a>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p role="status" className="state">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="state empty">{children}</div>;
}

/** An error with what to do next: sign in again, retry, or read the server's reason. */
export function ErrorState({ error, retry }: { error: unknown; retry?: () => void }) {
  const failure = error instanceof ApiFailure ? error : null;
  const next =
    failure?.status === 401 ? "Your session ended. Sign in again." :
    failure?.status === 410 ? "This account is closed." :
    failure?.code === "network" ? "Check your connection, then retry." :
    failure?.code === "db_unavailable" ? "The database is busy or down; retry in a moment." :
    "Retry; if it keeps failing, the message above says why.";
  return (
    <div role="alert" className="state error">
      <p>
        <strong>Something went wrong:</strong> {error instanceof Error ? error.message : String(error)}
        {failure ? <span className="code"> ({failure.code})</span> : null}
      </p>
      <p>{next}</p>
      {failure?.status === 401 ? <Link to="/sign-in">Sign in</Link> : retry ? <button type="button" onClick={retry}>Retry</button> : null}
    </div>
  );
}

/** Load something once (and again on `reload()`), with its three states. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true, error: undefined }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error: unknown) => live && setState({ error, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [tick, ...deps]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

/**
 * A confirmation as a modal <dialog>: focus moves into it, Escape cancels, and the
 * destructive button names what it does.
 */
export function Confirm(props: { open: boolean; title: string; children: ReactNode; confirmLabel: string; onConfirm: () => void; onCancel: () => void; confirmDisabled?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onCancel={(e) => { e.preventDefault(); props.onCancel(); }}>
      <h2 id="confirm-title">{props.title}</h2>
      {props.children}
      <div className="actions">
        <button type="button" onClick={props.onCancel} autoFocus>Cancel</button>
        <button type="button" className="danger" onClick={props.onConfirm} disabled={props.confirmDisabled}>{props.confirmLabel}</button>
      </div>
    </dialog>
  );
}

export function Field({ label, hint, children, id }: { label: string; hint?: string; children: ReactNode; id: string }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children}
      {hint ? <small id={`${id}-hint`}>{hint}</small> : null}
    </div>
  );
}
