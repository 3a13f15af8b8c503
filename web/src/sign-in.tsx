import { useState } from 'react';
import { ErrorBanner } from './banners.tsx';

export interface SignInProps {
  /** Why the user is here again (a rejected or revoked key), if that is why. */
  message: string | null;
  busy: boolean;
  onSignIn: (key: string) => void;
}

/** The sign-in screen: paste an API key. The server's first start prints a link that fills it in. */
export function SignIn({ message, busy, onSignIn }: SignInProps) {
  const [key, setKey] = useState('');
  return (
    <main className="sign-in">
      <form
        className="card"
        onSubmit={(event) => {
          event.preventDefault();
          if (key.trim()) onSignIn(key.trim());
        }}
      >
        <h1>Outrun</h1>
        <p className="muted">Agent runs that keep going when you close the tab.</p>
        <ErrorBanner message={message} />
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="current-password"
          autoFocus
          value={key}
          onChange={(event) => setKey(event.target.value)}
          placeholder="Paste your API key"
        />
        <button type="submit" className="primary" disabled={busy || !key.trim()}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="muted small">
          On its first start the server prints a sign-in link (<code>http://…/#key=…</code>) for the admin. An
          admin can create keys for others with <code>POST /v1/admin/users</code>.
        </p>
      </form>
    </main>
  );
}
