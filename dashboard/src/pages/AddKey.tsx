// Add a key (S2, PR2): the credential is sealed in this page with WebCrypto to the vault's
// public key (the same envelope as the CLI's: core/vault.ts's encryptCredential, which is
// WebCrypto only), bound to this seller and a key id the page derives for it (core/key-id.ts). Only the envelope is
// sent; the plaintext never leaves the page and the field is cleared once sealed.
import { useState, type FormEvent } from "react";
import { PROVIDER_IDS } from "../../../schema/providers.ts";
import { KeyConfigSchema } from "../../../schema/wire.ts";
import { encryptCredential, type VaultPublicKey } from "../../../core/vault.ts";
import { newKeyId } from "../../../core/key-id.ts";
import * as v from "valibot";
import { api, createKey, type Me } from "../lib/api.ts";
import { ErrorState, Field, navigate } from "../lib/ui.tsx";
import { formOf, KeyFields, patchOf } from "./KeyForm.tsx";

export function AddKey({ me }: { me: Me }) {
  const [provider, setProvider] = useState<string>("openai");
  const [credential, setCredential] = useState("");
  const [values, setValues] = useState(formOf({}));
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const p = patchOf(values);
    if (!p.ok) return setProblem(p.message);
    const config = v.safeParse(KeyConfigSchema, { ...p.patch, provider });
    if (!config.success) return setProblem(config.issues[0]?.message ?? "invalid configuration");
    if (!credential.trim()) return setProblem("paste the provider API key to list");
    setProblem(null);
    setBusy(true);
    try {
      const vault = await api<{ current: string | null; keys: VaultPublicKey[] }>("/api/vault/public-key");
      const current = vault.keys.find((k) => k.kid === vault.current);
      if (!current) throw new Error("the vault has no public key; ask the operator to configure VAULT_PRIVATE_KEYS");
      // Derived from this seller's id (core/key-id.ts): the API takes no other.
      const keyId = await newKeyId(me.id);
      const envelope = await encryptCredential(credential.trim(), current, { sellerId: me.id, keyId });
      setCredential("");
      await createKey({ keyId, sellerId: me.id, envelope, config: config.output });
      navigate("/");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={submit} aria-labelledby="add-title" className="panel">
      <h1 id="add-title">Add a key</h1>
      <p>Your provider key is encrypted in this browser (AES-256-GCM, to the vault's public key) before anything is sent. Only the key's own server object can decrypt it.</p>
      {problem ? <p role="alert" className="state error">{problem}</p> : null}
      {error ? <ErrorState error={error} /> : null}
      <Field id="add-provider" label="Provider">
        <select id="add-provider" value={provider} onChange={(e) => setProvider(e.target.value)}>
          {PROVIDER_IDS.map((p) => <option key={p} value={p}>{p}</option>)}
        </select>
      </Field>
      <Field id="add-credential" label="Provider API key" hint="Never stored or sent as typed: only its encrypted envelope leaves this page.">
        <input id="add-credential" type="password" autoComplete="off" spellCheck={false} required aria-describedby="add-credential-hint" value={credential} onChange={(e) => setCredential(e.target.value)} />
      </Field>
      <KeyFields values={values} set={setValues} prefix="add" />
      <div className="actions">
        <button type="submit" disabled={busy}>{busy ? "Encrypting and adding…" : "Encrypt and add key"}</button>
        <button type="button" onClick={() => navigate("/")}>Cancel</button>
      </div>
    </form>
  );
}
