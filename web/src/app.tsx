import { useEffect, useMemo, useRef, useState } from 'react';
import { OutrunApiError } from '../../src/client/errors.ts';
import { createOutrunClient } from '../../src/client/outrun-client.ts';
import type { Me } from '../../src/protocol/index.ts';
import { clearKey, loadKey, saveKey, takeKeyFromFragment } from './auth.ts';
import { explainError } from './explain.ts';
import { SignIn } from './sign-in.tsx';
import { Workspace } from './workspace.tsx';

const REJECTED_KEY = 'That API key was not accepted. It may be mistyped, or it may have been revoked.';

/** The app: the sign-in screen until a key is accepted, then the workspace. */
export function App() {
  const [key, setKey] = useState<string | null>(() => takeKeyFromFragment() ?? loadKey());
  const [me, setMe] = useState<Me | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const keyRef = useRef(key);
  keyRef.current = key;

  const signOut = (reason: string | null) => {
    clearKey();
    setKey(null);
    setMe(null);
    setMessage(reason);
  };
  const signOutRef = useRef(signOut);
  signOutRef.current = signOut;

  // A sign-in link opened in a tab that already shows the app changes only the fragment, which loads no page.
  useEffect(() => {
    const onHashChange = () => {
      const taken = takeKeyFromFragment();
      if (!taken || taken === keyRef.current) return;
      setMe(null);
      setMessage(null);
      setKey(taken);
    };
    window.addEventListener('hashchange', onHashChange);
    return () => window.removeEventListener('hashchange', onHashChange);
  }, []);

  // One client for the app's lifetime; it reads the current key for each request. A 401 on any request
  // means the key stopped working: back to the sign-in screen, saying so.
  const client = useMemo(
    () =>
      createOutrunClient({
        apiKey: () => keyRef.current ?? '',
        fetch: async (input, init) => {
          const response = await window.fetch(input, init);
          if (response.status === 401 && keyRef.current) signOutRef.current(REJECTED_KEY);
          return response;
        },
      }),
    [],
  );

  useEffect(() => {
    if (!key) return;
    let cancelled = false;
    setMe(null);
    const check = async () => {
      try {
        const result = await client.me();
        if (!cancelled) setMe(result);
      } catch (error) {
        if (cancelled) return;
        if (error instanceof OutrunApiError && error.status === 401) return;
        // The server is unreachable or failing: keep the key and try again shortly.
        setMessage(explainError(error instanceof Error ? error : new Error(String(error))));
        setTimeout(() => void (!cancelled && check()), 3000);
      }
    };
    void check();
    return () => {
      cancelled = true;
    };
  }, [client, key]);

  if (!key) {
    return (
      <SignIn
        message={message}
        busy={false}
        onSignIn={(entered) => {
          saveKey(entered);
          setMessage(null);
          setKey(entered);
        }}
      />
    );
  }
  if (!me) {
    return (
      <main className="sign-in">
        <div className="card">
          <h1>Outrun</h1>
          <p className="muted">{message ?? 'Signing in…'}</p>
          <button type="button" className="link" onClick={() => signOut(null)}>
            Use another key
          </button>
        </div>
      </main>
    );
  }
  return <Workspace client={client} me={me} onSignOut={() => signOut(null)} />;
}
