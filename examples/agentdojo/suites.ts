import { z } from 'zod';
import { defineTool, type AnyTool, type Effect, type Risk, type ToolContext } from '../../agents/tool.js';
import type { LabelInput } from '../../agents/label.js';

/**
 * AgentDojo's four tool suites as Palisade tools. Names, descriptions and argument schemas come
 * from the benchmark's task file; what each tool does to the world and how far its output can be
 * trusted is ours, written the way a security team classifies an integration:
 *
 * - `effect`: `read` changes nothing; `write` changes the user's own systems; `external` sends
 *   something out of them (money, mail, invitations, shared links, a URL fetched from a server
 *   someone else runs, which can carry data in its path).
 * - `returns.integrity`: `untrusted` for anything a third party can write: mail, messages, files,
 *   calendar invitations, reviews, web pages, transaction subjects, channel names.
 */
export const SUITE_NAMES = ['workspace', 'travel', 'banking', 'slack'] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];

interface Classification {
  effect: Effect;
  risk?: Risk;
  returns?: LabelInput;
  /** Keys of the records it returns that the system of record writes (see defineTool's `trustedFields`). */
  trustedFields?: string[];
}

const UNTRUSTED = (level: LabelInput['level'] = 'internal', categories: string[] = []): LabelInput => ({ level, categories, integrity: 'untrusted' });
const TRUSTED = (level: LabelInput['level'] = 'internal', categories: string[] = []): LabelInput => ({ level, categories, integrity: 'trusted' });

const read = (returns: LabelInput, trustedFields?: string[]): Classification => ({ effect: 'read', returns, ...(trustedFields ? { trustedFields } : {}) });

// What the system of record writes in each kind of record, as opposed to what the third party who
// sent or shared it wrote (bodies, subjects, titles, descriptions, file contents, reviews). A mail
// server stamps who sent a message and to whom; a bank records the accounts and amounts it moved.
const MAIL_FIELDS = ['id_', 'sender', 'recipients', 'cc', 'bcc', 'timestamp', 'status', 'read'];
const EVENT_FIELDS = ['id_', 'start_time', 'end_time', 'all_day', 'status', 'participants'];
const FILE_FIELDS = ['id_', 'filename', 'owner', 'shared_with', 'last_modified', 'size'];
const TRANSACTION_FIELDS = ['id', 'sender', 'recipient', 'amount', 'date', 'recurring'];
const MESSAGE_FIELDS = ['sender', 'recipient'];

// A write answers with the record it wrote, third parties' text in it included (an event's
// description, a file's content): its result is as trustworthy as reading that record.
const MAIL: Record<string, Classification> = {
  send_email: { effect: 'external', risk: 'high', returns: UNTRUSTED('confidential'), trustedFields: MAIL_FIELDS },
};
const CALENDAR: Record<string, Classification> = {
  // Invitations put events in a calendar: their text is anyone's.
  search_calendar_events: read(UNTRUSTED('confidential'), EVENT_FIELDS),
  get_day_calendar_events: read(UNTRUSTED('confidential'), EVENT_FIELDS),
  create_calendar_event: { effect: 'external', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: EVENT_FIELDS },
  cancel_calendar_event: { effect: 'external', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: EVENT_FIELDS },
};

export const CLASSIFICATION: Record<SuiteName, Record<string, Classification>> = {
  workspace: {
    ...MAIL,
    ...CALENDAR,
    delete_email: { effect: 'write', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: MAIL_FIELDS },
    get_unread_emails: read(UNTRUSTED('confidential'), MAIL_FIELDS),
    get_sent_emails: read(UNTRUSTED('confidential'), MAIL_FIELDS),
    get_received_emails: read(UNTRUSTED('confidential'), MAIL_FIELDS),
    get_draft_emails: read(UNTRUSTED('confidential'), MAIL_FIELDS),
    search_emails: read(UNTRUSTED('confidential'), MAIL_FIELDS),
    // The address book is the user's own.
    search_contacts_by_name: read(TRUSTED('confidential', ['pii'])),
    search_contacts_by_email: read(TRUSTED('confidential', ['pii'])),
    get_current_day: read(TRUSTED('public')),
    reschedule_calendar_event: { effect: 'external', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: EVENT_FIELDS },
    add_calendar_event_participants: { effect: 'external', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: EVENT_FIELDS },
    append_to_file: { effect: 'write', risk: 'medium', returns: UNTRUSTED('confidential'), trustedFields: FILE_FIELDS },
    // Files are shared with and edited by others.
    search_files_by_filename: read(UNTRUSTED('confidential'), FILE_FIELDS),
    create_file: { effect: 'write', risk: 'low', returns: UNTRUSTED('confidential'), trustedFields: FILE_FIELDS },
    delete_file: { effect: 'write', risk: 'high', returns: UNTRUSTED('confidential'), trustedFields: FILE_FIELDS },
    get_file_by_id: read(UNTRUSTED('confidential'), FILE_FIELDS),
    list_files: read(UNTRUSTED('confidential'), FILE_FIELDS),
    share_file: { effect: 'external', risk: 'high', returns: UNTRUSTED('confidential'), trustedFields: FILE_FIELDS },
    search_files: read(UNTRUSTED('confidential'), FILE_FIELDS),
  },
  travel: {
    ...MAIL,
    ...CALENDAR,
    get_user_information: read(TRUSTED('restricted', ['pii'])),
    // The booking provider's catalogue is a supplier feed; reviews are written by anyone.
    get_all_hotels_in_city: read(TRUSTED('public')),
    get_hotels_prices: read(TRUSTED('public')),
    get_rating_reviews_for_hotels: read(UNTRUSTED('public')),
    get_hotels_address: read(TRUSTED('public')),
    get_all_restaurants_in_city: read(TRUSTED('public')),
    get_cuisine_type_for_restaurants: read(TRUSTED('public')),
    get_restaurants_address: read(TRUSTED('public')),
    get_rating_reviews_for_restaurants: read(UNTRUSTED('public')),
    get_dietary_restrictions_for_all_restaurants: read(TRUSTED('public')),
    get_contact_information_for_restaurants: read(TRUSTED('public')),
    get_price_for_restaurants: read(TRUSTED('public')),
    check_restaurant_opening_hours: read(TRUSTED('public')),
    get_all_car_rental_companies_in_city: read(TRUSTED('public')),
    get_car_types_available: read(TRUSTED('public')),
    get_rating_reviews_for_car_rental: read(UNTRUSTED('public')),
    get_car_fuel_options: read(TRUSTED('public')),
    get_car_rental_address: read(TRUSTED('public')),
    get_car_price_per_day: read(TRUSTED('public')),
    get_flight_information: read(TRUSTED('public')),
    reserve_hotel: { effect: 'external', risk: 'high' },
    reserve_car_rental: { effect: 'external', risk: 'high' },
    reserve_restaurant: { effect: 'external', risk: 'medium' },
  },
  banking: {
    get_iban: read(TRUSTED('confidential', ['financial'])),
    send_money: { effect: 'external', risk: 'critical' },
    schedule_transaction: { effect: 'external', risk: 'critical' },
    update_scheduled_transaction: { effect: 'external', risk: 'critical' },
    get_balance: read(TRUSTED('confidential', ['financial'])),
    // A transaction's subject is written by whoever sent it.
    get_most_recent_transactions: read(UNTRUSTED('confidential', ['financial']), TRANSACTION_FIELDS),
    get_scheduled_transactions: read(TRUSTED('confidential', ['financial'])),
    read_file: read(UNTRUSTED('confidential')),
    get_user_info: read(TRUSTED('confidential', ['pii'])),
    update_password: { effect: 'write', risk: 'critical' },
    update_user_info: { effect: 'write', risk: 'medium' },
  },
  slack: {
    // Messages and web pages are written by others, and so are channel names: a name that is a
    // plain word is the workspace's registry entry, a name that is a whole text is someone's message.
    get_channels: read(UNTRUSTED(), ['[]']),
    add_user_to_channel: { effect: 'write', risk: 'medium' },
    read_channel_messages: read(UNTRUSTED(), MESSAGE_FIELDS),
    read_inbox: read(UNTRUSTED(), MESSAGE_FIELDS),
    send_direct_message: { effect: 'external', risk: 'medium' },
    send_channel_message: { effect: 'external', risk: 'medium' },
    get_users_in_channel: read(TRUSTED()),
    invite_user_to_slack: { effect: 'external', risk: 'high' },
    remove_user_from_slack: { effect: 'write', risk: 'high' },
    // Fetching a URL sends the request (and whatever its path holds) to that server.
    get_webpage: { effect: 'external', risk: 'low', returns: UNTRUSTED('public') },
    post_webpage: { effect: 'external', risk: 'high' },
  },
};

/** A tool as the benchmark's task file describes it. */
export interface ToolSpecJson {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export type ToolRunner = (name: string, args: Record<string, unknown>, ctx: ToolContext) => unknown;

/**
 * The suite's tools; `run` stands in for the suite's systems (the evaluation plays back recorded
 * outputs). A tool missing from the classification is refused rather than guessed.
 */
export function suiteTools(suite: SuiteName, specs: readonly ToolSpecJson[], run: ToolRunner): AnyTool[] {
  return specs.map((spec) => {
    const c = CLASSIFICATION[suite][spec.name];
    if (!c) throw new Error(`the ${suite} suite's tool '${spec.name}' has no classification in examples/agentdojo/suites.ts`);
    const input = z.fromJSONSchema(spec.parameters) as z.ZodObject;
    return defineTool({
      name: spec.name,
      description: spec.description.slice(0, 1000),
      input,
      effect: c.effect,
      risk: c.risk ?? (c.effect === 'read' ? 'low' : 'medium'),
      returns: c.returns ?? TRUSTED(),
      ...(c.trustedFields ? { trustedFields: c.trustedFields } : {}),
      run: (args, ctx) => run(spec.name, args as Record<string, unknown>, ctx),
    }) as AnyTool;
  });
}
