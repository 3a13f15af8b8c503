const KEY_STORAGE = 'outrun.apiKey';

/**
 * Takes an API key from the URL fragment (`#key=…`, the sign-in link the server prints on its first
 * start), stores it, and removes the fragment from the address bar and the history. A fragment never
 * reaches the server, so the key is not in any request log.
 */
export function takeKeyFromFragment(): string | null {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const key = fragment.get('key')?.trim();
  if (!key) return null;
  saveKey(key);
  window.history.replaceState(window.history.state, '', window.location.pathname + window.location.search);
  return key;
}

export function loadKey(): string | null {
  try {
    return window.localStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function saveKey(key: string): void {
  try {
    window.localStorage.setItem(KEY_STORAGE, key);
  } catch {
    // Private mode without storage: the key lives for this page only.
  }
}

export function clearKey(): void {
  try {
    window.localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Nothing stored.
  }
}

/** The unsent text of a chat's composer, kept across reloads so nothing typed is lost. */
export const drafts = {
  load(chatId: string): string {
    try {
      return window.localStorage.getItem(`outrun.draft.${chatId}`) ?? '';
    } catch {
      return '';
    }
  },
  save(chatId: string, text: string): void {
    try {
      if (text) window.localStorage.setItem(`outrun.draft.${chatId}`, text);
      else window.localStorage.removeItem(`outrun.draft.${chatId}`);
    } catch {
      // Storage full or unavailable: the text stays in the box.
    }
  },
};
