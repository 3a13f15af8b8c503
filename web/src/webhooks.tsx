import { useCallback, useEffect, useState, type FormEvent } from 'react';
import type { OutrunClient } from '../../src/client/outrun-client.ts';
import {
  WEBHOOK_EVENTS,
  type CreatedWebhook,
  type DeliveryStatus,
  type RotatedWebhookSecret,
  type WebhookDeliveryObject,
  type WebhookEvent,
  type WebhookObject,
} from '../../src/protocol/webhook.ts';
import { explainError, formatTime } from './explain.ts';
import { CopyButton } from './message-view.tsx';
import { ErrorBanner } from './banners.tsx';

/** The most webhooks the screen lists (the API's largest page). */
const WEBHOOK_PAGE = 100;
/** How many of a webhook's latest deliveries it shows. */
const DELIVERY_PAGE = 10;

const EVENT_LABELS: Record<WebhookEvent, string> = {
  'run.succeeded': 'a run finished',
  'run.failed': 'a run failed',
  'run.aborted': 'a run was stopped or cut short',
  'run.waiting': 'a run waits for a person',
};

const DELIVERY_BADGES: Record<DeliveryStatus, string> = {
  pending: 'badge-pending',
  delivered: 'badge-succeeded',
  failed: 'badge-failed',
};

/** A signing secret to show once: a new webhook's, or a rotated one's. */
type ShownSecret = (CreatedWebhook | RotatedWebhookSecret) & { rotated: boolean };

/**
 * The workspace's webhooks: list, add (its signing secret shown once), enable or disable, rotate the secret
 * (the new one shown once), delete, and recent deliveries, each finished one sendable again.
 */
export function WebhooksPanel({ client, isAdmin }: { client: OutrunClient; isAdmin: boolean }) {
  const [webhooks, setWebhooks] = useState<WebhookObject[] | null>(null);
  const [shown, setShown] = useState<ShownSecret | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setWebhooks((await client.listWebhooks({ limit: WEBHOOK_PAGE })).items);
      setError(null);
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  }, [client]);
  useEffect(() => {
    if (isAdmin) void load();
  }, [isAdmin, load]);

  if (!isAdmin) return <div className="empty">Only workspace admins manage webhooks.</div>;
  const remove = async (webhook: WebhookObject) => {
    try {
      await client.deleteWebhook(webhook.id);
      if (shown?.webhook.id === webhook.id) setShown(null);
      await load();
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  };
  const setEnabled = async (webhook: WebhookObject, enabled: boolean) => {
    try {
      await client.updateWebhook(webhook.id, { enabled });
      await load();
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  };
  const rotate = async (webhook: WebhookObject) => {
    try {
      setShown({ ...(await client.rotateWebhookSecret(webhook.id)), rotated: true });
      await load();
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  };

  return (
    <div className="webhooks">
      <p className="muted">
        A webhook gets a signed POST (Standard Webhooks) when a run in this workspace ends or starts waiting
        for a person.
      </p>
      <ErrorBanner message={error} />
      {shown ? <NewSecret shown={shown} onDone={() => setShown(null)} /> : null}
      {webhooks === null && !error ? <div className="empty">Loading…</div> : null}
      {webhooks?.length === 0 ? <p className="muted">No webhooks yet.</p> : null}
      <ul className="webhook-list">
        {webhooks?.map((webhook) => (
          <WebhookItem
            key={webhook.id}
            client={client}
            webhook={webhook}
            onDelete={() => remove(webhook)}
            onSetEnabled={(enabled) => setEnabled(webhook, enabled)}
            onRotate={() => rotate(webhook)}
          />
        ))}
      </ul>
      <NewWebhook
        client={client}
        onCreated={(result) => {
          setShown({ ...result, rotated: false });
          void load();
        }}
      />
    </div>
  );
}

function NewSecret({ shown, onDone }: { shown: ShownSecret; onDone: () => void }) {
  const previousUntil = shown.rotated ? shown.webhook.previousSecretExpiresAt : null;
  return (
    <div className="webhook-secret" role="status">
      <label>
        {shown.rotated ? 'New signing secret' : 'Signing secret'} for {shown.webhook.url}
        <input readOnly value={shown.secret} onFocus={(event) => event.target.select()} />
      </label>
      <p className="small">
        Copy it now: it will not be shown again. Verify each delivery’s <code>webhook-signature</code> header
        with it.
        {previousUntil
          ? ` Deliveries are signed with the previous secret too until ${formatTime(previousUntil)}: switch your receiver to this one before then.`
          : null}
      </p>
      <div className="form-actions">
        <CopyButton text={shown.secret} />
        <button type="button" className="small" onClick={onDone}>
          Done
        </button>
      </div>
    </div>
  );
}

/** What a webhook item asks to be confirmed. */
type Confirming = 'delete' | 'rotate' | null;

function WebhookItem(props: {
  client: OutrunClient;
  webhook: WebhookObject;
  onDelete: () => Promise<void>;
  onSetEnabled: (enabled: boolean) => Promise<void>;
  onRotate: () => Promise<void>;
}) {
  const { client, webhook, onDelete, onSetEnabled, onRotate } = props;
  const [confirming, setConfirming] = useState<Confirming>(null);
  const [busy, setBusy] = useState(false);
  const [open, setOpen] = useState(false);
  const act = async (action: () => Promise<void>) => {
    setBusy(true);
    try {
      await action();
    } finally {
      setBusy(false);
      setConfirming(null);
    }
  };

  return (
    <li className={webhook.enabled ? '' : 'paused'}>
      <div>
        <strong className="webhook-url">{webhook.url}</strong>
        {webhook.enabled ? null : <span className="badge badge-waiting">disabled</span>}
      </div>
      <div className="muted small">
        {webhook.events.join(', ')} · created {formatTime(webhook.createdAt)}
        {webhook.previousSecretExpiresAt
          ? ` · previous secret signs until ${formatTime(webhook.previousSecretExpiresAt)}`
          : ''}
      </div>
      {confirming === 'delete' ? (
        <Confirm
          question="Delete this webhook? Deliveries not sent yet are dropped."
          action="Delete"
          danger
          busy={busy}
          onConfirm={() => void act(onDelete)}
          onCancel={() => setConfirming(null)}
        />
      ) : confirming === 'rotate' ? (
        <Confirm
          question="Rotate the signing secret? The current one keeps signing deliveries for 24 hours."
          action="Rotate"
          busy={busy}
          onConfirm={() => void act(onRotate)}
          onCancel={() => setConfirming(null)}
        />
      ) : (
        <div className="schedule-actions">
          <button type="button" className="small" aria-expanded={open} onClick={() => setOpen(!open)}>
            Deliveries
          </button>
          <button
            type="button"
            className="small"
            disabled={busy}
            aria-label={`${webhook.enabled ? 'Disable' : 'Enable'} ${webhook.url}`}
            title={
              webhook.enabled
                ? 'Stop deliveries: nothing new is sent, and deliveries not sent yet end failed (retry them later).'
                : 'Deliver the events of runs that end from now on.'
            }
            onClick={() => void act(() => onSetEnabled(!webhook.enabled))}
          >
            {webhook.enabled ? 'Disable' : 'Enable'}
          </button>
          <button
            type="button"
            className="small"
            aria-label={`Rotate secret of ${webhook.url}`}
            onClick={() => setConfirming('rotate')}
          >
            Rotate secret
          </button>
          <button
            type="button"
            className="small danger"
            aria-label={`Delete ${webhook.url}`}
            onClick={() => setConfirming('delete')}
          >
            Delete
          </button>
        </div>
      )}
      {open ? <Deliveries client={client} webhookId={webhook.id} enabled={webhook.enabled} /> : null}
    </li>
  );
}

function Deliveries(props: { client: OutrunClient; webhookId: string; enabled: boolean }) {
  const { client, webhookId, enabled } = props;
  const [deliveries, setDeliveries] = useState<WebhookDeliveryObject[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [retrying, setRetrying] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setDeliveries((await client.listWebhookDeliveries(webhookId, { limit: DELIVERY_PAGE })).items);
      setError(null);
    } catch (caught) {
      setError(explainError(caught as Error));
    }
  }, [client, webhookId]);
  useEffect(() => {
    void load();
  }, [load]);
  const retry = async (delivery: WebhookDeliveryObject) => {
    setRetrying(delivery.id);
    try {
      await client.retryDelivery(webhookId, delivery.id);
      await load();
    } catch (caught) {
      setError(explainError(caught as Error));
    } finally {
      setRetrying(null);
    }
  };

  return (
    <div className="deliveries event-log">
      <ErrorBanner message={error} />
      {deliveries === null && !error ? <p className="muted small">Loading…</p> : null}
      {deliveries?.length === 0 ? <p className="muted small">No deliveries yet.</p> : null}
      {deliveries && deliveries.length > 0 ? (
        <table aria-label="Latest deliveries">
          <thead>
            <tr>
              <th>Event</th>
              <th>Status</th>
              <th>Attempts</th>
              <th>Last status code</th>
              <th>Created</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {deliveries.map((delivery) => (
              <tr key={delivery.id}>
                <td>
                  <code>{delivery.event}</code>
                </td>
                <td>
                  <span className={`badge ${DELIVERY_BADGES[delivery.status]}`}>{delivery.status}</span>
                </td>
                <td>{delivery.attempts}</td>
                <td title={delivery.lastError ?? undefined}>{delivery.lastStatusCode ?? '–'}</td>
                <td>{formatTime(delivery.createdAt)}</td>
                <td>
                  {delivery.status === 'pending' ? null : (
                    <button
                      type="button"
                      className="link small"
                      disabled={!enabled || retrying !== null}
                      title={
                        enabled
                          ? 'Send it again now, with the same webhook-id.'
                          : 'Enable the webhook to send it again.'
                      }
                      onClick={() => void retry(delivery)}
                    >
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <button type="button" className="link small" onClick={() => void load()}>
        Refresh deliveries
      </button>
    </div>
  );
}

function NewWebhook({
  client,
  onCreated,
}: {
  client: OutrunClient;
  onCreated: (created: CreatedWebhook) => void;
}) {
  const [url, setUrl] = useState('');
  const [events, setEvents] = useState<WebhookEvent[]>([...WEBHOOK_EVENTS]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onCreated(await client.createWebhook({ url: url.trim(), events }));
      setUrl('');
      setEvents([...WEBHOOK_EVENTS]);
    } catch (caught) {
      setError(explainError(caught as Error));
    } finally {
      setBusy(false);
    }
  };
  const toggle = (name: WebhookEvent, on: boolean) =>
    setEvents(WEBHOOK_EVENTS.filter((item) => (item === name ? on : events.includes(item))));

  return (
    <form className="new-schedule" aria-label="New webhook" onSubmit={(event) => void onSubmit(event)}>
      <h3>New webhook</h3>
      <label>
        URL
        <input
          type="url"
          required
          placeholder="https://example.com/hooks/outrun"
          value={url}
          onChange={(event) => setUrl(event.target.value)}
        />
      </label>
      <fieldset className="webhook-events">
        <legend>Events</legend>
        {WEBHOOK_EVENTS.map((name) => (
          <label key={name} className="inline">
            <input
              type="checkbox"
              checked={events.includes(name)}
              onChange={(event) => toggle(name, event.target.checked)}
            />
            <code>{name}</code> <span className="muted small">{EVENT_LABELS[name]}</span>
          </label>
        ))}
      </fieldset>
      <ErrorBanner message={error} />
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy || !url.trim() || events.length === 0}>
          Add webhook
        </button>
      </div>
    </form>
  );
}

/** A question with its action and Cancel, in place of a webhook's buttons. */
function Confirm(props: {
  question: string;
  action: string;
  danger?: boolean;
  busy: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  return (
    <div className="schedule-actions">
      <span>{props.question}</span>
      <button
        type="button"
        className={`small ${props.danger ? 'danger' : 'primary'}`}
        autoFocus
        disabled={props.busy}
        onClick={props.onConfirm}
      >
        {props.action}
      </button>
      <button type="button" className="small" onClick={props.onCancel}>
        Cancel
      </button>
    </div>
  );
}
