from django.urls import path

from billing.api import views

urlpatterns = [
    path("plans", views.PlanListApi.as_view(), name="billing-plans"),
    path("checkout/sessions", views.CheckoutSessionCreateApi.as_view(), name="billing-checkout"),
    path("orders/<uuid:order_id>", views.OrderDetailApi.as_view(), name="billing-order"),
    path("subscriptions", views.SubscriptionListApi.as_view(), name="billing-subscriptions"),
    path(
        "subscriptions/<uuid:subscription_id>/cancel",
        views.SubscriptionCancelApi.as_view(),
        name="billing-subscription-cancel",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/resume",
        views.SubscriptionResumeApi.as_view(),
        name="billing-subscription-resume",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/change-preview",
        views.SubscriptionChangePreviewApi.as_view(),
        name="billing-subscription-change-preview",
    ),
    path(
        "subscriptions/<uuid:subscription_id>/change",
        views.SubscriptionChangeApi.as_view(),
        name="billing-subscription-change",
    ),
    path("billing-portal/sessions", views.BillingPortalSessionCreateApi.as_view(), name="billing-portal-session"),
    path("payments", views.PaymentListApi.as_view(), name="billing-payments"),
    path("invoices", views.InvoiceListApi.as_view(), name="billing-invoices"),
]
