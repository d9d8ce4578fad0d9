"""A generated corpus for the assistant: 32 documents in eight formats
(contracts, invoices, clinical notes, emails, meeting notes, code, tables,
web pages) and 20 questions, each with the file or files that hold its
answer. Deterministic: the same files every time.

`build(folder)` writes the files and returns the questions as
`(question, [answer files], expected words)`."""
import os
import zipfile

CONTRACTS = {
    "contracts/lease-harbour-street.md": """# Residential lease: 14 Harbour Street, flat 3

Landlord: Marta Kowalski. Tenant: Daniel Osei.

1. Term. The lease runs from 1 March 2026 to 28 February 2027.
2. Rent. The monthly rent is 1,450 EUR, due on the first day of each month.
3. Deposit. The tenant pays a security deposit of 2,900 EUR, returned within 30 days of the end.
4. Pets. No pets without the landlord's written consent.
5. Notice. Either party may end the lease with two months' written notice.
""",
    "contracts/supply-agreement-fenwick.txt": """SUPPLY AGREEMENT

Between Fenwick Orchards (supplier) and Greenleaf Grocers (buyer).

Clause 1. The supplier delivers 40 crates of dried figs every second Monday.
Clause 2. Price: 38 EUR per crate, fixed until 31 December 2026.
Clause 3. Late delivery: the buyer may deduct 5 percent per day of delay, at most 25 percent.
Clause 4. Termination: 90 days' written notice by either party.
Clause 5. Disputes go to arbitration in Rotterdam.
""",
    "contracts/nda-quillmark.md": """# Mutual non-disclosure agreement

Parties: Quillmark Software BV and Osei Design Studio.
Effective date: 5 January 2026.

- Confidential information must be kept secret for five years after disclosure.
- Each party may share it only with employees who need to know.
- The agreement is governed by Dutch law.
- Breach carries a penalty of 25,000 EUR per incident.
""",
}

INVOICES = {
    f"invoices/invoice-{number}.txt": f"""INVOICE {number}
From: {sender}
To: Osei Design Studio
Date: {date}
Services: {service}
Total due: {total} by {due}
Bank: IBAN NL{number}0000{number}
"""
    for number, sender, date, service, total, due in [
        ("2041", "Brightline Consulting Ltd", "12 April 2026", "website accessibility audit, 3 days", "1,950 EUR", "12 May 2026"),
        ("2042", "Kestrel Print House", "15 April 2026", "500 brochures, matte, two-sided", "640 EUR", "15 May 2026"),
        ("2043", "Northwind Hosting", "1 May 2026", "dedicated server rental, May", "289 EUR", "10 May 2026"),
        ("2044", "Brightline Consulting Ltd", "3 June 2026", "usability testing with eight participants", "3,200 EUR", "3 July 2026"),
        ("2045", "Ortega Translations", "9 June 2026", "Spanish translation of the booking app, 12,000 words", "1,080 EUR", "9 July 2026"),
    ]
}

NOTES = {
    "clinical/visit-2026-02-11-okafor.md": """# Clinic visit, 11 February 2026
Patient: Grace Okafor, born 1961.
Complaint: persistent cough for three weeks, no fever.
Findings: mild wheeze on the left side. Oxygen saturation 97 percent.
Plan: chest X-ray; salbutamol inhaler as needed; review in two weeks.
""",
    "clinical/visit-2026-02-25-okafor.md": """# Follow-up visit, 25 February 2026
Patient: Grace Okafor.
The chest X-ray was clear. The cough has improved with the inhaler.
Plan: continue salbutamol for one more week, then stop. No further review needed.
""",
    "clinical/visit-2026-03-04-lindqvist.md": """# Clinic visit, 4 March 2026
Patient: Erik Lindqvist, born 1978.
Complaint: sprained right ankle while running.
Findings: swelling, no fracture suspected.
Plan: rest, ice, compression bandage, ibuprofen 400 mg three times a day for five days.
""",
    "clinical/allergies.csv": """patient,allergy,reaction
Grace Okafor,penicillin,rash
Erik Lindqvist,none known,
Amara Nwosu,latex,hives
Tomas Horvat,shellfish,swelling of the lips
""",
}

EMAILS = {
    "mail/2026-03-02-venue.eml": ("Lena Fischer <lena@harbourhall.example>", "Booking of the Harbour Hall",
        "Dear Daniel,\r\n\r\nThe Harbour Hall is booked for your launch party on 15 June 2026 from 18:00 to 23:00. "
        "The hire fee is 1,200 EUR, with a 300 EUR deposit due by 1 May.\r\n\r\nBest, Lena"),
    "mail/2026-03-09-catering.eml": ("Raj Patel <raj@saffronkitchen.example>", "Catering quote",
        "Hello,\r\n\r\nFor 80 guests we propose a vegetarian buffet at 28 EUR per person, drinks not included. "
        "We need the final guest count ten days before the event.\r\n\r\nRaj"),
    "mail/2026-03-20-printer.eml": ("Kestrel Print House <orders@kestrel.example>", "Brochure proof",
        "The proof of the brochure is attached. Please approve it by 25 March so we can print on 27 March."),
    "mail/2026-04-01-accountant.eml": ("Sofia Marin <sofia@marinaccounts.example>", "Quarterly VAT return",
        "Daniel, the VAT return for the first quarter is due on 30 April 2026. "
        "Please send me all invoices from January to March by 15 April."),
    "mail/2026-04-18-landlord.eml": ("Marta Kowalski <marta@example.com>", "Boiler repair",
        "Dear Daniel, a plumber will repair the boiler in flat 3 on Thursday 23 April between 9 and 12. "
        "Please make sure someone is home."),
    "mail/2026-05-05-hosting.eml": ("Northwind Hosting <support@northwind.example>", "Planned maintenance",
        "Your dedicated server will be restarted for maintenance on 12 May 2026 at 02:00 UTC. "
        "Expected downtime is 20 minutes."),
}

MEETINGS = {
    "meetings/2026-04-02-team.md": """# Team meeting, 2 April 2026
Present: Ana, Bruno, Chen.
- Decided to move the launch of the booking app to 15 June.
- Chen to send the revised budget by Friday.
- Open: who reviews the privacy policy?
""",
    "meetings/2026-04-16-team.md": """# Team meeting, 16 April 2026
Present: Ana, Bruno, Chen, Daniel.
- Bruno will review the privacy policy before 30 April.
- The Spanish translation goes to Ortega Translations.
- Ana reported 42 beta testers signed up.
""",
    "meetings/2026-05-07-board.md": """# Board meeting, 7 May 2026
Present: Daniel Osei (chair), Sofia Marin, Ingrid Holm.
- Approved the marketing budget of 18,000 EUR for the launch.
- Agreed to hire a second developer in September.
- Next board meeting: 6 August 2026.
""",
    "meetings/2026-05-21-retro.html": """<html><body><h1>Retrospective, 21 May 2026</h1>
<p>What went well: the beta test found 17 bugs before launch.</p>
<p>What to improve: <b>code reviews take too long</b>; the team will pair on reviews on Tuesdays.</p>
</body></html>""",
}

CODE = {
    "code/booking/pricing.py": '''"""Booking prices."""

WEEKEND_SURCHARGE = 0.15
STUDENT_DISCOUNT = 0.10


def price(base, weekend=False, student=False):
    """The price of a booking: weekends cost 15 percent more, students get 10 percent off."""
    total = base * (1 + WEEKEND_SURCHARGE) if weekend else base
    return round(total * (1 - STUDENT_DISCOUNT) if student else total, 2)
''',
    "code/booking/availability.rs": '''/// Opening hours of the hall: bookings are possible from 8 to 22.
pub const OPENING_HOUR: u32 = 8;
pub const CLOSING_HOUR: u32 = 22;

/// Whether a slot starting at `hour` lasting `hours` fits in opening hours.
pub fn fits(hour: u32, hours: u32) -> bool {
    hour >= OPENING_HOUR && hour + hours <= CLOSING_HOUR
}
''',
    "code/booking/config.toml": """[server]
port = 8088
max_bookings_per_user = 3

[email]
sender = "bookings@osei.example"
""",
    "code/README.md": """# Booking app

Run `cargo run` for the server and `python -m booking` for the pricing tool.
Deployments go to Northwind Hosting every Wednesday.
""",
}

PAGES = {
    "web/privacy-policy.html": """<html><body><h1>Privacy policy</h1>
<p>We keep booking records for <b>three years</b> and then delete them.</p>
<p>Payment data is handled by our payment provider and never stored by us.</p>
</body></html>""",
    "web/opening-times.html": """<html><body><h2>Opening times</h2>
<ul><li>Monday to Friday: 9:00 to 18:00</li><li>Saturday: 10:00 to 14:00</li><li>Sunday: closed</li></ul>
</body></html>""",
}

DOCX = {
    "contracts/employment-offer-holm.docx": [
        "Offer of employment",
        "Ingrid Holm is offered the position of product designer from 1 September 2026.",
        "Gross salary: 4,300 EUR per month. Probation period: two months.",
        "Holiday: 26 days per year.",
    ],
}

PDFS = {
    "reports/insurance-policy.pdf": [
        "Business insurance policy 77-1024. Insurer: Meridian Mutual.",
        "Cover: fire, theft and water damage up to 150,000 EUR. Excess: 500 EUR per claim.",
    ],
}

QUESTIONS = [
    ("How much is the security deposit for the Harbour Street flat?", ["contracts/lease-harbour-street.md"], ["2,900"]),
    ("How many crates of figs does Fenwick Orchards deliver?", ["contracts/supply-agreement-fenwick.txt"], ["40"]),
    ("For how many years must confidential information stay secret under the Quillmark agreement?", ["contracts/nda-quillmark.md"], ["five"]),
    ("When is invoice 2041 due, and for how much?", ["invoices/invoice-2041.txt"], ["12 May", "1,950"]),
    ("What did Kestrel Print House charge for the brochures?", ["invoices/invoice-2042.txt"], ["640"]),
    ("What is the total of the usability testing invoice?", ["invoices/invoice-2044.txt"], ["3,200"]),
    ("What did the chest X-ray show for Grace Okafor?", ["clinical/visit-2026-02-25-okafor.md"], ["clear"]),
    ("Which dose of ibuprofen was prescribed for the sprained ankle?", ["clinical/visit-2026-03-04-lindqvist.md"], ["400"]),
    ("Which patient is allergic to latex?", ["clinical/allergies.csv"], ["Nwosu"]),
    ("What is the hire fee for the Harbour Hall launch party?", ["mail/2026-03-02-venue.eml"], ["1,200"]),
    ("How much per person is the vegetarian buffet catering quote?", ["mail/2026-03-09-catering.eml"], ["28"]),
    ("When is the quarterly VAT return due?", ["mail/2026-04-01-accountant.eml"], ["30 April"]),
    ("When will the plumber repair the boiler?", ["mail/2026-04-18-landlord.eml"], ["23 April"]),
    ("Who has to send the revised budget?", ["meetings/2026-04-02-team.md"], ["Chen"]),
    ("Who reviews the privacy policy, and by when?", ["meetings/2026-04-16-team.md"], ["Bruno"]),
    ("What marketing budget did the board approve?", ["meetings/2026-05-07-board.md"], ["18,000"]),
    ("How much is the weekend surcharge in the booking pricing code?", ["code/booking/pricing.py"], ["15"]),
    ("How long are booking records kept under the privacy policy?", ["web/privacy-policy.html"], ["three years"]),
    ("What salary is Ingrid Holm offered?", ["contracts/employment-offer-holm.docx"], ["4,300"]),
    ("What is the excess per claim on the Meridian Mutual insurance policy?", ["reports/insurance-policy.pdf"], ["500"]),
]


# The same facts asked in other words than the files use: what search by
# meaning (embeddings) adds to full text is measured on these
# (bench/assistant.py --search-only --embed MODEL).
PARAPHRASES = [
    ("What must the renter hand over up front for the apartment?", ["contracts/lease-harbour-street.md"]),
    ("How many boxes of fruit get supplied?", ["contracts/supply-agreement-fenwick.txt"]),
    ("How long is the secrecy period in the non-disclosure deal?", ["contracts/nda-quillmark.md"]),
    ("What did the printer bill us for the leaflets?", ["invoices/invoice-2042.txt"]),
    ("What did the lung scan reveal?", ["clinical/visit-2026-02-25-okafor.md"]),
    ("What painkiller amount was given for the twisted foot?", ["clinical/visit-2026-03-04-lindqvist.md"]),
    ("Which person reacts badly to rubber gloves?", ["clinical/allergies.csv"]),
    ("What does the meat-free lunch spread cost per guest?", ["mail/2026-03-09-catering.eml"]),
    ("When is the heating getting fixed?", ["mail/2026-04-18-landlord.eml"]),
    ("How much pay does the new hire get?", ["contracts/employment-offer-holm.docx"]),
    ("How long do we retain customer reservation data?", ["web/privacy-policy.html"]),
    ("Who must rework the spending plan?", ["meetings/2026-04-02-team.md"]),
]


def _eml(sender, subject, body):
    return (f"From: {sender}\r\nTo: Daniel Osei <daniel@osei.example>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Mar 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n")


def _docx(paragraphs):
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f"<w:body>{body}</w:body></w:document>")
    return {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        "word/document.xml": document,
    }


def _pdf(pages):
    """A minimal PDF, one page per string, text in Helvetica, streams uncompressed."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 11 Tf 50 750 Td ({escaped}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /Contents {len(objects)} 0 R /Resources << /Font << /F1 3 0 R >> >> /MediaBox [0 0 612 792] >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def build(folder):
    """Write the corpus under `folder`; return the questions."""
    def put(path, data):
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    for group in (CONTRACTS, INVOICES, NOTES, MEETINGS, CODE, PAGES):
        for path, text in group.items():
            put(path, text)
    for path, (sender, subject, body) in EMAILS.items():
        put(path, _eml(sender, subject, body))
    for path, paragraphs in DOCX.items():
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in _docx(paragraphs).items():
                z.writestr(name, data)
    for path, pages in PDFS.items():
        put(path, _pdf(pages))
    return QUESTIONS


def files():
    """Every document's path in the corpus."""
    paths = [*CONTRACTS, *INVOICES, *NOTES, *MEETINGS, *CODE, *PAGES, *EMAILS, *DOCX, *PDFS]
    return paths
