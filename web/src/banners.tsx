/** A failure to show above a form or a list, read out at once by screen readers; nothing when there is none. */
export function ErrorBanner({ message }: { message: string | null | undefined }) {
  if (!message) return null;
  return (
    <p className="banner banner-error" role="alert">
      {message}
    </p>
  );
}

/** A short confirmation (such as "Saved."), announced politely; nothing when there is none. */
export function NoticeBanner({ message }: { message: string | null | undefined }) {
  if (!message) return null;
  return (
    <p className="banner banner-ok" role="status">
      {message}
    </p>
  );
}
