"""The fixed text of emails and pages, per language, and dates formatted with Babel.

A small in-code catalogue rather than gettext .po files: the product has a dozen strings and three
languages, and a dict keeps them reviewable in one place. Lookups fall back from the full locale
("fr_MA") to its language ("fr"), then to English, then to the key itself, so a missing
translation shows up as readable text instead of an error in the middle of a send.

Some entries hold ``{name}`` fields that the caller fills with ``str.format`` (``{title}``,
``{author}`` ...).
"""

from __future__ import annotations

from datetime import date

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

FALLBACK_LOCALE = "en"

# French typography puts a no-break space before ":" (U+00A0 here: every client renders it).
_CATALOGUE: dict[str, dict[str, str]] = {
    "fr": {
        "general_section": "Autres actualités",
        "read_more": "Lire la suite",
        "unsubscribe": "Se désabonner",
        "preferences": "Choisir mes rubriques",
        "footer_reason": "Vous recevez cet e-mail parce que vous êtes abonné·e à « {title} ».",
        "preheader_fallback": "L’essentiel de l’actualité du jour",
        "by_author": "Par {author}",
        "empty_edition": "Aucun article dans cette édition.",
        "subject": "{title} – {date}\u00a0: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": "\u00a0:",
        "headline_separator": " · ",
    },
    "en": {
        "general_section": "Other news",
        "read_more": "Read more",
        "unsubscribe": "Unsubscribe",
        "preferences": "Choose my sections",
        "footer_reason": "You are receiving this email because you subscribed to {title}.",
        "preheader_fallback": "Today’s top stories",
        "by_author": "By {author}",
        "empty_edition": "No articles in this edition.",
        "subject": "{title} – {date}: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": ":",
        "headline_separator": " · ",
    },
    "ar": {
        "general_section": "أخبار أخرى",
        "read_more": "اقرأ المزيد",
        "unsubscribe": "إلغاء الاشتراك",
        "preferences": "اختيار الأقسام",
        "footer_reason": "تصلك هذه الرسالة لأنك مشترك في النشرة «{title}».",
        "preheader_fallback": "أهم أخبار اليوم",
        "by_author": "بقلم {author}",
        "empty_edition": "لا توجد مقالات في هذا العدد.",
        "subject": "{title} – {date}: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": ":",
        "headline_separator": " · ",
    },
}


def normalise_locale(locale: str) -> str:
    """Babel's form of a locale: "fr-MA" and "fr_MA" both give "fr_MA"."""
    return locale.strip().replace("-", "_")


def _candidates(locale: str) -> tuple[str, ...]:
    full = normalise_locale(locale)
    language = full.split("_", 1)[0].lower()
    return (full, language, FALLBACK_LOCALE)


def gettext(locale: str, key: str) -> str:
    """The fixed text ``key`` in ``locale``; falls back to the language, English, then the key."""
    for candidate in _candidates(locale):
        text = _CATALOGUE.get(candidate, {}).get(key)
        if text is not None:
            return text
    return key


def babel_locale(locale: str) -> Locale:
    """Babel's Locale for ``locale``, English when Babel does not know it."""
    try:
        return Locale.parse(normalise_locale(locale))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse(FALLBACK_LOCALE)


def format_long_date(d: date, locale: str) -> str:
    """The date written out in full: "mardi 27 janvier 2026" in fr."""
    return format_date(d, format="full", locale=babel_locale(locale))


def language_tag(locale: str) -> str:
    """The BCP 47 tag for HTML's lang attribute: "fr_MA" -> "fr-MA"."""
    return normalise_locale(locale).replace("_", "-")


def is_rtl_locale(locale: str) -> bool:
    return babel_locale(locale).character_order == "right-to-left"


# The web pages, the confirmation email and the editors' pages (web/, signup.py). Kept apart
# from the email's few strings above; merged below without ever replacing an existing key.
_PAGES_CATALOGUE: dict[str, dict[str, str]] = {
    "fr": {
        "web_subscribe_title": "S’abonner à « {title} »",
        "web_subscribe_intro": "Chaque matin, l’essentiel de l’actualité dans un seul e-mail.",
        "web_email_label": "Adresse e-mail",
        "web_name_label": "Nom (facultatif)",
        "web_sections_label": "Rubriques (aucune cochée\u00a0: toutes)",
        "web_subscribe_button": "S’abonner",
        "web_privacy_note": "Nous vous enverrons un lien de confirmation. Vous pourrez vous désabonner à tout moment, en un clic.",
        "web_honeypot_label": "Ne pas remplir ce champ",
        "web_check_mail_title": "Vérifiez votre boîte mail",
        "web_check_mail_text": "Si l’adresse peut recevoir nos e-mails, un message de confirmation vient de partir. Ouvrez le lien qu’il contient pour activer l’abonnement\u00a0; il est valable {days} jours.",
        "web_check_mail_spam": "Rien reçu après quelques minutes\u00a0? Regardez dans le dossier des indésirables.",
        "web_invalid_address_title": "Adresse e-mail non valide",
        "web_invalid_address_text": "Cette adresse ne peut pas recevoir d’e-mail. Vérifiez-la et réessayez.",
        "web_invalid_form_text": "Un champ du formulaire n’est pas accepté. Vérifiez-le et réessayez.",
        "web_confirmed_title": "Abonnement confirmé",
        "web_confirmed_text": "Merci\u00a0! Vous recevrez « {title} » dès la prochaine édition.",
        "web_bad_link_title": "Ce lien n’est pas valide",
        "web_bad_link_text": "Il est peut-être incomplet (copiez-le en entier) ou trop ancien.",
        "web_confirm_expired_text": "Les liens de confirmation sont valables {days} jours. Inscrivez-vous de nouveau pour en recevoir un autre.",
        "web_signup_again": "S’inscrire de nouveau",
        "web_unsubscribe_title": "Se désabonner",
        "web_unsubscribe_text": "Vous ne recevrez plus « {title} » à l’adresse {address}.",
        "web_unsubscribe_button": "Me désabonner",
        "web_unsubscribed_title": "Vous êtes désabonné·e",
        "web_unsubscribed_text": "Vous ne recevrez plus « {title} ». Une erreur\u00a0? Vous pouvez vous réabonner à tout moment.",
        "web_resubscribe": "Se réabonner",
        "web_preferences_title": "Mes préférences",
        "web_preferences_intro": "Choisissez les rubriques que vous voulez recevoir. Aucune cochée\u00a0: toutes.",
        "web_language_label": "Langue",
        "web_language_default": "Langue de la lettre",
        "web_save_button": "Enregistrer",
        "web_preferences_saved": "Vos préférences sont enregistrées.",
        "web_leave_title": "Ne plus rien recevoir",
        "web_not_active_note": "Cette adresse ne reçoit pas la lettre actuellement.",
        "web_rate_limited_title": "Trop de demandes",
        "web_rate_limited_text": "Veuillez réessayer dans quelques minutes.",
        "web_not_found_title": "Page introuvable",
        "web_not_found_text": "Cette adresse ne correspond à aucune page.",
        "web_error_title": "Une erreur est survenue",
        "web_error_text": "Nous n’avons pas pu traiter votre demande. Réessayez plus tard.",
        "web_too_large_title": "Demande trop volumineuse",
        "web_bad_request_title": "Demande non valide",
        "web_bad_request_text": "Le formulaire envoyé n’est pas lisible. Revenez à la page précédente et réessayez.",
        "web_form_expired_text": "Le formulaire a expiré ou ne vient pas de ce site. Rechargez la page et réessayez.",
        "web_method_title": "Méthode non autorisée",
        "web_login_title": "Identification requise",
        "web_login_text": "Cette page est réservée à la rédaction.",
        "web_back_home": "Retour à l’inscription",
        "web_busy_title": "Service momentanément indisponible",
        "web_busy_text": "Nous sommes très sollicités en ce moment. Réessayez dans quelques secondes\u00a0: rien n’a été modifié.",
        "web_confirm_title": "Confirmer l’abonnement",
        "web_confirm_text": "Appuyez sur le bouton pour recevoir « {title} » à l’adresse {address}.",
        "web_already_confirmed_title": "Abonnement déjà confirmé",
        "web_already_confirmed_text": "Cette adresse reçoit déjà « {title} ». Il n’y a rien d’autre à faire.",
        "web_headers_too_large": "En-têtes de la requête trop volumineux.",
        "web_request_timeout": "La requête est arrivée trop lentement.",
        "confirm_email_subject": "Confirmez votre abonnement à « {title} »",
        "confirm_email_intro": "Bonjour,\n\nPour recevoir « {title} », confirmez votre adresse en ouvrant ce lien\u00a0:",
        "confirm_email_button": "Confirmer mon abonnement",
        "confirm_email_expiry": "Le lien est valable {days} jours.",
        "confirm_email_ignore": "Si vous n’avez rien demandé, ignorez ce message\u00a0: vous ne recevrez rien de plus.",
        "editor_title": "Éditions récentes",
        "editor_date": "Date",
        "editor_status": "État",
        "editor_deliveries": "Envois",
        "editor_failures": "Échecs",
        "editor_held": "retenue",
        "editor_hold": "Retenir",
        "editor_release": "Libérer",
        "editor_preview": "Aperçu",
        "editor_next_edition": "Prochaine édition\u00a0: {date}",
        "editor_no_editions": "Aucune édition enregistrée pour l’instant.",
        "editor_subject": "Objet",
        "editor_preheader": "Texte d’aperçu",
        "editor_phone_view": "Vue téléphone (375 px)",
        "editor_wide_view": "Vue ordinateur",
        "editor_text_part": "Version texte",
        "editor_test_send": "Envoi de test",
        "editor_test_address": "Adresse de test",
        "editor_test_button": "Envoyer le test",
        "editor_test_sent": "Édition du {date} envoyée en test à {address}.",
        "editor_test_failed": "L’envoi de test a échoué",
        "editor_empty": "Aucun article dans la fenêtre de cette édition\u00a0: rien ne sera envoyé.",
        "editor_preview_failed": "Impossible de préparer cette édition",
        "editor_back": "Retour aux éditions",
    },
    "en": {
        "web_subscribe_title": "Subscribe to {title}",
        "web_subscribe_intro": "Every morning, the day’s essential news in one email.",
        "web_email_label": "Email address",
        "web_name_label": "Name (optional)",
        "web_sections_label": "Sections (none ticked: all)",
        "web_subscribe_button": "Subscribe",
        "web_privacy_note": "We will send you a confirmation link. You can unsubscribe at any time, in one click.",
        "web_honeypot_label": "Leave this field empty",
        "web_check_mail_title": "Check your inbox",
        "web_check_mail_text": "If the address can receive our emails, a confirmation message is on its way. Open the link inside to start your subscription; it is valid for {days} days.",
        "web_check_mail_spam": "Nothing after a few minutes? Look in your spam folder.",
        "web_invalid_address_title": "Invalid email address",
        "web_invalid_address_text": "This address cannot receive email. Check it and try again.",
        "web_invalid_form_text": "A field of the form is not accepted. Check it and try again.",
        "web_confirmed_title": "Subscription confirmed",
        "web_confirmed_text": "Thank you! You will receive {title} from the next edition.",
        "web_bad_link_title": "This link is not valid",
        "web_bad_link_text": "It may be incomplete (copy all of it) or too old.",
        "web_confirm_expired_text": "Confirmation links are valid for {days} days. Sign up again to get a new one.",
        "web_signup_again": "Sign up again",
        "web_unsubscribe_title": "Unsubscribe",
        "web_unsubscribe_text": "You will no longer receive {title} at {address}.",
        "web_unsubscribe_button": "Unsubscribe me",
        "web_unsubscribed_title": "You are unsubscribed",
        "web_unsubscribed_text": "You will no longer receive {title}. A mistake? You can subscribe again at any time.",
        "web_resubscribe": "Subscribe again",
        "web_preferences_title": "My preferences",
        "web_preferences_intro": "Choose the sections you want. None ticked: all of them.",
        "web_language_label": "Language",
        "web_language_default": "The newsletter’s language",
        "web_save_button": "Save",
        "web_preferences_saved": "Your preferences are saved.",
        "web_leave_title": "Stop receiving everything",
        "web_not_active_note": "This address does not receive the newsletter at the moment.",
        "web_rate_limited_title": "Too many requests",
        "web_rate_limited_text": "Please try again in a few minutes.",
        "web_not_found_title": "Page not found",
        "web_not_found_text": "There is no page at this address.",
        "web_error_title": "Something went wrong",
        "web_error_text": "We could not handle your request. Please try again later.",
        "web_too_large_title": "Request too large",
        "web_bad_request_title": "Invalid request",
        "web_bad_request_text": "The form could not be read. Go back to the previous page and try again.",
        "web_form_expired_text": "The form has expired or does not come from this site. Reload the page and try again.",
        "web_method_title": "Method not allowed",
        "web_login_title": "Login required",
        "web_login_text": "This page is for the editors.",
        "web_back_home": "Back to sign-up",
        "web_busy_title": "Service briefly unavailable",
        "web_busy_text": "We are very busy right now. Please try again in a few seconds: nothing was changed.",
        "web_confirm_title": "Confirm your subscription",
        "web_confirm_text": "Press the button to receive {title} at {address}.",
        "web_already_confirmed_title": "Subscription already confirmed",
        "web_already_confirmed_text": "This address already receives {title}. There is nothing else to do.",
        "web_headers_too_large": "Request headers too large.",
        "web_request_timeout": "The request arrived too slowly.",
        "confirm_email_subject": "Confirm your subscription to {title}",
        "confirm_email_intro": "Hello,\n\nTo receive {title}, confirm your address by opening this link:",
        "confirm_email_button": "Confirm my subscription",
        "confirm_email_expiry": "The link is valid for {days} days.",
        "confirm_email_ignore": "If you did not ask for this, ignore this message: you will receive nothing more.",
        "editor_title": "Recent editions",
        "editor_date": "Date",
        "editor_status": "Status",
        "editor_deliveries": "Deliveries",
        "editor_failures": "Failures",
        "editor_held": "held",
        "editor_hold": "Hold",
        "editor_release": "Release",
        "editor_preview": "Preview",
        "editor_next_edition": "Next edition: {date}",
        "editor_no_editions": "No edition recorded yet.",
        "editor_subject": "Subject",
        "editor_preheader": "Preview text",
        "editor_phone_view": "Phone view (375 px)",
        "editor_wide_view": "Desktop view",
        "editor_text_part": "Plain-text version",
        "editor_test_send": "Test send",
        "editor_test_address": "Test address",
        "editor_test_button": "Send the test",
        "editor_test_sent": "Edition of {date} sent as a test to {address}.",
        "editor_test_failed": "The test send failed",
        "editor_empty": "No article in this edition’s window: nothing will be sent.",
        "editor_preview_failed": "This edition cannot be prepared",
        "editor_back": "Back to the editions",
    },
    "ar": {
        "web_subscribe_title": "الاشتراك في «{title}»",
        "web_subscribe_intro": "كل صباح، أهم الأخبار في رسالة واحدة.",
        "web_email_label": "البريد الإلكتروني",
        "web_name_label": "الاسم (اختياري)",
        "web_sections_label": "الأقسام (بدون اختيار: جميع الأقسام)",
        "web_subscribe_button": "اشترك",
        "web_privacy_note": "سنرسل إليك رابط تأكيد. يمكنك إلغاء الاشتراك في أي وقت بنقرة واحدة.",
        "web_honeypot_label": "اترك هذا الحقل فارغًا",
        "web_check_mail_title": "تحقق من بريدك",
        "web_check_mail_text": "إذا كان العنوان يستقبل رسائلنا، فقد أُرسلت إليه رسالة تأكيد. افتح الرابط الذي فيها لتفعيل الاشتراك؛ وهو صالح لمدة {days} أيام.",
        "web_check_mail_spam": "لم يصلك شيء بعد بضع دقائق؟ راجع مجلد الرسائل غير المرغوب فيها.",
        "web_invalid_address_title": "عنوان بريد غير صالح",
        "web_invalid_address_text": "لا يمكن لهذا العنوان استقبال البريد. تحقق منه وأعد المحاولة.",
        "web_invalid_form_text": "أحد حقول النموذج غير مقبول. تحقق منه وأعد المحاولة.",
        "web_confirmed_title": "تم تأكيد الاشتراك",
        "web_confirmed_text": "شكرًا! ستصلك «{title}» ابتداءً من العدد القادم.",
        "web_bad_link_title": "هذا الرابط غير صالح",
        "web_bad_link_text": "ربما يكون ناقصًا (انسخه كاملًا) أو قديمًا.",
        "web_confirm_expired_text": "روابط التأكيد صالحة لمدة {days} أيام. سجّل من جديد لتحصل على رابط آخر.",
        "web_signup_again": "التسجيل من جديد",
        "web_unsubscribe_title": "إلغاء الاشتراك",
        "web_unsubscribe_text": "لن تصلك «{title}» بعد الآن على العنوان {address}.",
        "web_unsubscribe_button": "ألغِ اشتراكي",
        "web_unsubscribed_title": "تم إلغاء اشتراكك",
        "web_unsubscribed_text": "لن تصلك «{title}» بعد الآن. هل كان ذلك خطأ؟ يمكنك الاشتراك من جديد في أي وقت.",
        "web_resubscribe": "الاشتراك من جديد",
        "web_preferences_title": "تفضيلاتي",
        "web_preferences_intro": "اختر الأقسام التي تريدها. بدون اختيار: جميع الأقسام.",
        "web_language_label": "اللغة",
        "web_language_default": "لغة النشرة",
        "web_save_button": "حفظ",
        "web_preferences_saved": "تم حفظ تفضيلاتك.",
        "web_leave_title": "التوقف عن تلقي كل شيء",
        "web_not_active_note": "هذا العنوان لا يتلقى النشرة حاليًا.",
        "web_rate_limited_title": "طلبات كثيرة جدًا",
        "web_rate_limited_text": "يرجى المحاولة بعد بضع دقائق.",
        "web_not_found_title": "الصفحة غير موجودة",
        "web_not_found_text": "لا توجد صفحة بهذا العنوان.",
        "web_error_title": "حدث خطأ",
        "web_error_text": "تعذّر معالجة طلبك. أعد المحاولة لاحقًا.",
        "web_too_large_title": "الطلب كبير جدًا",
        "web_bad_request_title": "طلب غير صالح",
        "web_bad_request_text": "تعذّرت قراءة النموذج. عد إلى الصفحة السابقة وأعد المحاولة.",
        "web_form_expired_text": "انتهت صلاحية النموذج أو أنه لم يأتِ من هذا الموقع. أعد تحميل الصفحة وحاول مجددًا.",
        "web_method_title": "طريقة غير مسموح بها",
        "web_login_title": "تسجيل الدخول مطلوب",
        "web_login_text": "هذه الصفحة مخصصة للمحررين.",
        "web_back_home": "العودة إلى التسجيل",
        "web_busy_title": "الخدمة غير متاحة مؤقتًا",
        "web_busy_text": "نواجه ضغطًا كبيرًا حاليًا. أعد المحاولة بعد بضع ثوانٍ: لم يتغير شيء.",
        "web_confirm_title": "تأكيد الاشتراك",
        "web_confirm_text": "اضغط على الزر لتصلك «{title}» على العنوان {address}.",
        "web_already_confirmed_title": "الاشتراك مؤكَّد من قبل",
        "web_already_confirmed_text": "هذا العنوان يتلقى «{title}» بالفعل. لا حاجة لفعل أي شيء آخر.",
        "web_headers_too_large": "ترويسات الطلب كبيرة جدًا.",
        "web_request_timeout": "وصل الطلب ببطء شديد.",
        "confirm_email_subject": "أكّد اشتراكك في «{title}»",
        "confirm_email_intro": "مرحبًا،\n\nلتصلك «{title}»، أكّد عنوانك بفتح هذا الرابط:",
        "confirm_email_button": "تأكيد اشتراكي",
        "confirm_email_expiry": "الرابط صالح لمدة {days} أيام.",
        "confirm_email_ignore": "إذا لم تطلب ذلك، فتجاهل هذه الرسالة: لن يصلك شيء آخر.",
        "editor_title": "الأعداد الأخيرة",
        "editor_date": "التاريخ",
        "editor_status": "الحالة",
        "editor_deliveries": "الإرسال",
        "editor_failures": "الإخفاقات",
        "editor_held": "موقوف",
        "editor_hold": "إيقاف",
        "editor_release": "إطلاق",
        "editor_preview": "معاينة",
        "editor_next_edition": "العدد القادم: {date}",
        "editor_no_editions": "لا يوجد أي عدد مسجل بعد.",
        "editor_subject": "الموضوع",
        "editor_preheader": "نص المعاينة",
        "editor_phone_view": "عرض الهاتف (375 بكسل)",
        "editor_wide_view": "عرض الحاسوب",
        "editor_text_part": "النسخة النصية",
        "editor_test_send": "إرسال تجريبي",
        "editor_test_address": "عنوان التجربة",
        "editor_test_button": "إرسال التجربة",
        "editor_test_sent": "أُرسل عدد {date} تجريبيًا إلى {address}.",
        "editor_test_failed": "فشل الإرسال التجريبي",
        "editor_empty": "لا توجد مقالات في نافذة هذا العدد: لن يُرسل شيء.",
        "editor_preview_failed": "تعذّر تحضير هذا العدد",
        "editor_back": "العودة إلى الأعداد",
    },
}

for _language, _entries in _PAGES_CATALOGUE.items():
    # Existing keys win: this block only ever adds.
    _CATALOGUE[_language] = {**_entries, **_CATALOGUE.get(_language, {})}
