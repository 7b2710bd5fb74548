"""The shop's mail code: plain Django, nothing in it knows about tests."""
from django.core.mail import send_mail


def confirm_order(email: str, number: int) -> None:
    send_mail(f'Your order {number}', f'Thank you! Order {number} is on its way.\n',
              None, [email], fail_silently=False)
